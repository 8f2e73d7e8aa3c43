#[rpc_macros::service]
trait Kv {
    async fn get(&self, key: String) -> String;
    async fn delete(&self, key: String);
}

fn main() {}
