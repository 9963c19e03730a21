//! `DoFormat` through a real socket and the generated tonic client.

use formatdata::pb::Data;

use formatdata_test_support::app::spawn_app;

async fn do_format(text: &str) -> String {
    let app = spawn_app().await;
    let reply = app
        .client()
        .await
        .do_format(Data {
            text: text.to_owned(),
        })
        .await
        .expect("DoFormat succeeds")
        .into_inner()
        .text;
    app.shutdown().await.expect("clean shutdown");
    reply
}

#[tokio::test]
async fn uppercases_the_tutorial_greeting() {
    assert_eq!(do_format("hello,world!").await, "HELLO,WORLD!");
}

#[tokio::test]
async fn applies_full_unicode_case_mapping() {
    assert_eq!(
        do_format("straße ﬁ ŉ αβγ привет բարեւ 😀").await,
        "STRASSE FI ʼN ΑΒΓ ПРИВЕТ ԲԱՐԵՒ 😀"
    );
}

#[tokio::test]
async fn empty_text_gets_an_empty_reply() {
    assert_eq!(do_format("").await, "");
}

#[tokio::test]
async fn a_megabyte_of_text_round_trips() {
    let text = "the quick brown fox, ß and ﬁ. ".repeat(32 * 1024);
    assert_eq!(do_format(&text).await, text.to_uppercase());
}

#[tokio::test]
async fn concurrent_calls_each_get_their_own_reply() {
    let app = spawn_app().await;
    let client = app.client().await;
    let calls = (0..200).map(|n| {
        let mut client = client.clone();
        tokio::spawn(async move {
            let text = format!("call number {n}: ß");
            let reply = client.do_format(Data { text }).await.unwrap().into_inner();
            (n, reply.text)
        })
    });
    for call in calls {
        let (n, reply) = call.await.unwrap();
        assert_eq!(reply, format!("CALL NUMBER {n}: SS"));
    }
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_message_split_across_data_frames_is_reassembled() {
    use formatdata_test_support::raw::{self, DO_FORMAT, data_message, frame};

    let app = spawn_app().await;
    let mut client = raw::connect(app.addr).await;
    let body = frame(false, &data_message("split ß".as_bytes()));
    let (response, mut send) = raw::start_call(&mut client, DO_FORMAT, &[]);
    send.send_data(body.slice(..3), false).unwrap();
    send.send_data(body.slice(3..9), false).unwrap();
    send.send_data(body.slice(9..), true).unwrap();

    let reply = raw::read_reply(response).await;

    assert_eq!(reply.code(), tonic::Code::Ok, "{}", reply.message());
    assert_eq!(
        &reply.body[5..],
        data_message("SPLIT SS".as_bytes()).as_slice()
    );
}
