"""Sends every Unicode scalar value through a FormatData server and compares with str.upper().

Prints one JSON object: how many code points were checked, and each one whose reply differs from
this Python's str.upper(), with whether a Unicode version newer than this Python's database
(unicodedata.unidata_version) explains the difference: the character itself is new, or it had no
uppercase here because its uppercase letter was added later (U+0264 gained U+A7CB in Unicode 16). Uppercasing is context-free, so a block of characters can be sent as
one string; a block that differs is bisected to find the characters responsible.
"""
import json
import sys
import unicodedata

import grpc

import data_pb2
import data_pb2_grpc

BLOCK = 8192
SURROGATES = range(0xD800, 0xE000)


def unknown_here(char):
    return unicodedata.category(char) == "Cn"


def main(target):
    stub = data_pb2_grpc.FormatDataStub(grpc.insecure_channel(target))

    def differs(text):
        return stub.DoFormat(data_pb2.Data(text=text), timeout=30).text != text.upper()

    mismatches = []

    def bisect(chars):
        if not differs("".join(chars)):
            return
        if len(chars) == 1:
            char = chars[0]
            ours = stub.DoFormat(data_pb2.Data(text=char), timeout=30).text
            mismatches.append({
                "code_point": "U+%04X" % ord(char),
                "ours": ours,
                "python": char.upper(),
                "explained_by_newer_unicode": unknown_here(char)
                or (char.upper() == char and any(unknown_here(c) for c in ours)),
            })
            return
        middle = len(chars) // 2
        bisect(chars[:middle])
        bisect(chars[middle:])

    checked = 0
    for start in range(0, 0x110000, BLOCK):
        chars = [chr(cp) for cp in range(start, start + BLOCK) if cp not in SURROGATES]
        checked += len(chars)
        bisect(chars)

    print(json.dumps({
        "checked": checked,
        "python_unicode_version": unicodedata.unidata_version,
        "mismatches": mismatches,
    }))


if __name__ == '__main__':
    main(sys.argv[1])
