#[rpc_macros::service]
struct Kv {
    store: Vec<u8>,
}

fn main() {}
