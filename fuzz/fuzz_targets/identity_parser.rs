//! Fuzzes the `.qchat` identity-file parser: any text gives an identity or a clear error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qchat_shared::identity::Identity;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(identity) = Identity::parse(text) {
            let again = Identity::parse(&identity.to_text()).expect("a parsed identity parses again");
            assert_eq!(again, identity);
        }
    }
});
