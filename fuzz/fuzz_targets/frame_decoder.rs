//! Fuzzes the frame decoder with every frame type a peer can send: it must return a value
//! or an error, never panic, and whatever it accepts must encode back to the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qchat_shared::codec;
use qchat_shared::frame::{ClientControl, Deliver, DownloadReply, Open, RelayControl, SendReply, UploadEnd, UploadReply};

fn check<T>(data: &[u8])
where
    T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
{
    if let Ok((value, _)) = codec::decode::<T>(data) {
        let again = codec::encode(&value).expect("a decoded frame encodes");
        let (back, _) = codec::decode::<T>(&again).expect("an encoded frame decodes");
        assert_eq!(back, value);
    }
}

fuzz_target!(|data: &[u8]| {
    check::<Open>(data);
    check::<ClientControl>(data);
    check::<RelayControl>(data);
    check::<SendReply>(data);
    check::<Deliver>(data);
    check::<UploadReply>(data);
    check::<UploadEnd>(data);
    check::<DownloadReply>(data);
});
