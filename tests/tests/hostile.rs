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
    write_frame(
        &mut send,
        &Open::Send(ChatSend {
            id: MessageId::random(),
            room: "alice+bob".into(),
            sealed: "after the noise".as_bytes().to_vec(),
        }),
    )
    .await
    .unwrap();
    send.finish().unwrap();
    assert!(matches!(read_frame::<SendReply, _>(&mut recv).await.unwrap(), Some(SendReply::Stored { .. })));
    // Not an MLS message of the room's group: bob is told he cannot read it.
    let notice = bob
        .expect("a notice", |e| match e {
            qchat_client::Event::Notice { text, .. } => Some(text),
            _ => None,
        })
        .await;
    assert!(notice.contains("cannot read"), "{notice}");
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

use qchat_shared::frame::{DownloadReply, DownloadStart, FileId, UploadEnd, UploadReply, UploadStart};

#[tokio::test]
async fn a_stream_that_never_finishes_its_frame_is_timed_out() {
    let relay = TestRelay::start().await;
    let raw = relay.raw("alice").await;
    let (mut send, recv) = raw.connection.open_bi().await.unwrap();
    send.write_all(&[0, 0]).await.unwrap();
    let started = std::time::Instant::now();
    assert_eq!(reset_code(recv).await, StreamCode::Timeout);
    assert!(started.elapsed() >= qchat_shared::limits::FIRST_FRAME_DEADLINE - std::time::Duration::from_secs(1));
    // The connection itself is fine.
    let (mut send, mut recv) = raw.connection.open_bi().await.unwrap();
    write_frame(
        &mut send,
        &Open::Send(ChatSend {
            id: MessageId::random(),
            room: "alice+bob".into(),
            sealed: "still fine".as_bytes().to_vec(),
        }),
    )
    .await
    .unwrap();
    send.finish().unwrap();
    assert!(matches!(read_frame::<SendReply, _>(&mut recv).await.unwrap(), Some(SendReply::Stored { .. })));
}

#[tokio::test]
async fn two_thousand_streams_at_once_are_bounded_and_all_answered() {
    let relay = TestRelay::start().await;
    let raw = relay.raw("alice").await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..2000 {
        let connection = raw.connection.clone();
        tasks.spawn(async move {
            let (mut send, mut recv) = connection.open_bi().await.unwrap();
            let frame = Open::Send(ChatSend {
                id: MessageId::random(),
                room: "alice+bob".into(),
                sealed: format!("flood {i}").into_bytes(),
            });
            write_frame(&mut send, &frame).await.unwrap();
            send.finish().unwrap();
            read_frame::<SendReply, _>(&mut recv).await.unwrap()
        });
    }
    let mut stored = 0;
    while let Some(reply) = tasks.join_next().await {
        stored += matches!(reply.unwrap(), Some(SendReply::Stored { .. })) as usize;
    }
    assert_eq!(stored, 2000);
    let mut bob = relay.client("bob");
    assert_eq!(bob.connected().await.waiting_for_you, 2000);
}

async fn raw_upload(
    raw: &qchat_tests::RawConnection,
    start: UploadStart,
) -> (quinn::SendStream, quinn::RecvStream, FileId) {
    let (mut send, mut recv) = raw.connection.open_bi().await.unwrap();
    write_frame(&mut send, &Open::Upload(start)).await.unwrap();
    match read_frame::<UploadReply, _>(&mut recv).await.unwrap() {
        Some(UploadReply::Ready { file_id, offset: 0, .. }) => (send, recv, file_id),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn uploads_that_lie_about_size_or_hash_are_refused_and_leave_nothing() {
    let relay = TestRelay::start().await;
    let raw = relay.raw("alice").await;

    let start = UploadStart { room: None, size: 100, resume: None };
    let (mut send, mut recv, _) = raw_upload(&raw, start).await;
    send.write_all(&[1u8; 50]).await.unwrap();
    send.finish().unwrap();
    let reply = read_frame::<UploadReply, _>(&mut recv).await.unwrap();
    assert!(matches!(&reply, Some(UploadReply::Refused { reason }) if reason.contains("50 of 100")), "{reply:?}");

    let start = UploadStart { room: None, size: 1000, resume: None };
    let (mut send, mut recv, file_id) = raw_upload(&raw, start).await;
    send.write_all(&[2u8; 1000]).await.unwrap();
    write_frame(&mut send, &UploadEnd { blake3: [0; 32] }).await.unwrap();
    send.finish().unwrap();
    let reply = read_frame::<UploadReply, _>(&mut recv).await.unwrap();
    assert!(matches!(&reply, Some(UploadReply::Refused { reason }) if reason.contains("does not match")), "{reply:?}");
    assert!(!relay.data.join("spool").join(file_id.to_string()).exists(), "the lying upload is gone");

    // Nothing was offered, and nothing was written outside the spool.
    let mut bob = relay.client("bob");
    assert_eq!(bob.connected().await.files_for_you, 0);
    for entry in std::fs::read_dir(&relay.data).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(name == "spool" || name == "relay.sock" || name.starts_with("relay.db"), "unexpected {name}");
    }
    assert!(!relay.tmp.path().join("etc").exists());
}

#[tokio::test]
async fn nobody_downloads_a_file_that_is_not_for_them() {
    let relay = TestRelay::start().await;
    let mut bob = relay.client("bob");
    bob.connected().await;
    let transfer = bob.client.send_file(qchat_tests::write_file(&relay.tmp.path().join("for-alice.bin"), 5000));
    let file_id = bob.uploaded(transfer).await;

    for (who, id) in [("bob", file_id), ("alice", FileId::random())] {
        let raw = relay.raw(who).await;
        let (mut send, mut recv) = raw.connection.open_bi().await.unwrap();
        write_frame(&mut send, &Open::Download(DownloadStart { file_id: id, offset: 0 })).await.unwrap();
        send.finish().unwrap();
        let reply = read_frame::<DownloadReply, _>(&mut recv).await.unwrap();
        assert!(
            matches!(&reply, Some(DownloadReply::Refused { reason }) if reason.contains("no file")),
            "{who}: {reply:?}"
        );
    }
}

#[tokio::test]
async fn a_reconnect_storm_does_not_hurt_the_other_user() {
    let relay = TestRelay::start().await;
    let mut bob = relay.client("bob");
    bob.connected().await;
    let mut storm = tokio::task::JoinSet::new();
    for _ in 0..60 {
        let identity = relay.identity("alice");
        let addr = relay.addr;
        storm.spawn(async move {
            let raw = qchat_tests::raw_connect(&identity, addr).await;
            raw.connection.close(0u32.into(), b"storm");
        });
    }
    while storm.join_next().await.is_some() {}
    let mut alice = relay.client("alice");
    alice.connected().await;
    alice.client.send_and_wait("after the storm").await.unwrap();
    assert_eq!(bob.messages(1).await[0].text, "after the storm");
}
