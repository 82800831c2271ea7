//! A relay in a process of its own, for tests that kill it (`relay-for-tests PKI DATA
//! ADDR`): prints `listening on ADDR`, then serves until killed.

use std::io::Write;

#[tokio::main]
async fn main() {
    qchat_shared::allocator::tune();
    let args: Vec<String> = std::env::args().collect();
    let [_, pki, data, listen] = args.as_slice() else {
        eprintln!("usage: relay-for-tests PKI DATA ADDR");
        std::process::exit(2);
    };
    let config = qchat_server::RelayConfig::new(pki.into(), data.into(), listen.parse().expect("ADDR"));
    let relay = qchat_server::Relay::start(config).await.expect("relay starts");
    println!("listening on {}", relay.local_addr());
    let _ = std::io::stdout().flush();
    std::future::pending::<()>().await;
}
