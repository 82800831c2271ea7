//! Property tests: every frame survives an encode/decode round trip, no bytes make the
//! decoder panic, and no name from the network escapes the download folder.

use proptest::prelude::*;
use qchat_shared::codec::{decode, encode};
use qchat_shared::frame::{Body, ChatSend, ClientControl, Deliver, FileId, MessageId, Open, UploadStart};
use qchat_shared::names::{sanitize_file_name, MAX_SAVED_NAME};

proptest! {
    #[test]
    fn chat_frames_round_trip(id in any::<[u8; 16]>(), room in "[a-z+]{1,65}", sealed in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let frame = Open::Send(ChatSend { id: MessageId(id), room, sealed });
        let (back, used): (Open, usize) = decode(&encode(&frame).unwrap()).unwrap();
        prop_assert_eq!(back, frame);
        prop_assert!(used > 4);
    }

    #[test]
    fn deliveries_and_acks_round_trip(index: u64, seq: u64, room_seq: u64, time_ms: i64, from in "[a-z]{1,32}",
                                      text in ".{0,500}", added in proptest::option::of("[a-z]{1,32}"),
                                      seqs in proptest::collection::vec(any::<u64>(), 0..200)) {
        let body = match added {
            Some(user) => Body::Added { user },
            None => Body::Text(text),
        };
        let room = "team".to_string();
        let deliver = Deliver { index, id: MessageId([7; 16]), seq, room, room_seq, from, body, time_ms };
        prop_assert_eq!(decode::<Deliver>(&encode(&deliver).unwrap()).unwrap().0, deliver);
        let ack = ClientControl::Ack { seqs };
        prop_assert_eq!(decode::<ClientControl>(&encode(&ack).unwrap()).unwrap().0, ack);
    }

    #[test]
    fn uploads_round_trip(room in proptest::option::of("[a-z+]{1,65}"), size: u64, resume in proptest::option::of(any::<[u8; 16]>())) {
        let frame = Open::Upload(UploadStart { room, size, resume: resume.map(FileId) });
        prop_assert_eq!(decode::<Open>(&encode(&frame).unwrap()).unwrap().0, frame);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode::<Open>(&bytes);
        let _ = decode::<ClientControl>(&bytes);
        let _ = decode::<Deliver>(&bytes);
    }

    #[test]
    fn device_names_with_long_extensions_stay_short(ext in "[a-z]{150,400}(\\.[a-z]{1,5})?") {
        let clean = sanitize_file_name(&format!("CON.{ext}"));
        prop_assert!(clean.len() <= MAX_SAVED_NAME);
        prop_assert!(!clean.contains(".."));
        prop_assert!(clean.starts_with("_CON"));
    }

    #[test]
    fn sanitized_names_stay_in_their_folder(name in "\\PC{0,300}|[./\\\\ a-zA-Z:\\n\\x00]{0,40}") {
        let clean = sanitize_file_name(&name);
        prop_assert!(!clean.is_empty());
        prop_assert!(clean.len() <= MAX_SAVED_NAME);
        prop_assert!(!clean.contains('/') && !clean.contains('\\'));
        prop_assert!(!clean.contains(".."));
        prop_assert!(!clean.chars().any(char::is_control));
        prop_assert!(clean != "." && !clean.ends_with('.') && !clean.ends_with(' '));
        let folder = std::path::Path::new("/downloads");
        let joined = folder.join(&clean);
        prop_assert_eq!(joined.parent(), Some(folder));
    }
}
