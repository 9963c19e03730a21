//! Arbitrary UTF-8 through `uppercase`, checked against `str::to_uppercase`: the ASCII fast
//! path must never change what the full Unicode mapping gives.
#![no_main]

use formatdata::uppercase::uppercase;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    assert_eq!(uppercase(text.to_owned()), text.to_uppercase(), "{text:?}");
});
