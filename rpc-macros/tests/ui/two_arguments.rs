#[rpc_macros::service]
trait Kv {
    async fn put(&self, key: String, value: String) -> Result<(), String>;
}

fn main() {}
