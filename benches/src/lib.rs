//! Benchmarks for qchat: the end-to-end figures of `qchat-bench` (relay throughput, chat
//! latency, durable messages per second, relay memory) next to raw QUIC on the same
//! machine, and criterion micro-benchmarks (`cargo bench`).
