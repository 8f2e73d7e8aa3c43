#[rpc_macros::service]
trait Kv {
    fn get(&self, req: String) -> Result<String, String>;
}

fn main() {}
