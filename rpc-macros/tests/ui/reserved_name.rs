#[rpc_macros::service]
trait Kv {
    async fn new(&self, key: String) -> Result<String, String>;
}

fn main() {}
