#[rpc_macros::service]
trait Kv {
    async fn get(key: String) -> Result<String, String>;
}

fn main() {}
