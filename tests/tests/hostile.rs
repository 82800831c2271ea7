//! Bad input from a client with a valid identity: the stream is closed with an error
//! code, and everyone else goes on chatting.

use qchat_shared::codes::StreamCode;
use qchat_shared::frame::{ChatSend, MessageId, Open, SendReply};
use qchat_shared::io::{read_frame, write_frame};
use qchat_tests::TestRelay;

async fn reset_code(mut recv: quinn::RecvStream) -> StreamCode {
    match recv.read_to_end(1024).await {
        Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) => StreamCode::from_varint(code),
        other => panic!("expected the relay to reset the stream, got {other:?}"),
    }
}

#[tokio::test]
async fn malformed_and_oversized_frames_close_only_their_stream() {
    let relay = TestRelay::start().await;
    let mut alice = relay.client("alice");
    let mut bob = relay.client("bob");
    alice.connected().await;
    bob.connected().await;
    let raw = relay.raw("alice").await;

    // An unknown frame type.
    let (mut send, recv) = raw.connection.open_bi().await.unwrap();
    send.write_all(&[0, 0, 0, 3, 0xee, 0xee, 0xee]).await.unwrap();
    assert_eq!(reset_code(recv).await, StreamCode::Malformed);

    // A length prefix of 4 GiB.
    let (mut send, recv) = raw.connection.open_bi().await.unwrap();
    send.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    assert_eq!(reset_code(recv).await, StreamCode::TooLarge);

    // A frame cut short.
    let (mut send, recv) = raw.connection.open_bi().await.unwrap();
    send.write_all(&[0, 0, 0, 100, 1, 2]).await.unwrap();
    send.finish().unwrap();
    assert_eq!(reset_code(recv).await, StreamCode::Malformed);

    // The same connection still works, and so do the others.
    let (mut send, mut recv) = raw.connection.open_bi().await.unwrap();
    write_frame(&mut send, &Open::Send(ChatSend { id: MessageId::random(), text: "after the noise".into() }))
        .await
        .unwrap();
    send.finish().unwrap();
    assert!(matches!(read_frame::<SendReply, _>(&mut recv).await.unwrap(), Some(SendReply::Stored { .. })));
    assert_eq!(bob.messages(1).await[0].text, "after the noise");
    bob.client.send_and_wait("still here").await.unwrap();
    assert_eq!(alice.messages(1).await[0].text, "still here");
}

#[tokio::test]
async fn garbage_on_the_control_stream_ends_only_that_connection() {
    let relay = TestRelay::start().await;
    let mut bob = relay.client("bob");
    bob.connected().await;
    let mut raw = relay.raw("alice").await;
    raw.control.0.write_all(&[0, 0, 0, 2, 0xff, 0xff]).await.unwrap();
    let err = raw.connection.closed().await;
    assert!(matches!(err, quinn::ConnectionError::ApplicationClosed(_)), "{err:?}");

    let mut alice = relay.client("alice");
    alice.connected().await;
    alice.client.send_and_wait("relay is fine").await.unwrap();
    assert_eq!(bob.messages(1).await[0].text, "relay is fine");
}
