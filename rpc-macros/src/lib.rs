//! The `#[service]` attribute macro, re-exported as `rpc::service`.
//!
//! This crate only parses and generates code; everything that happens at run
//! time (HTTP, JSON, auth, deadlines, limits, the error envelope) lives in the
//! `rpc` crate, and the generated code calls into it through absolute paths
//! (`::rpc::...`).
//!
//! # Layout
//!
//! - [`model`]: parses and validates the trait into a small [`model::Service`]
//!   value, reporting every problem with its span.
//! - [`generate`]: turns the model into the trait, the server adapter and the
//!   typed client.
//!
//! The entry point is one line into [`expand`], which tests call directly.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;

mod generate;
mod model;

/// Turns a trait of `async fn method(&self, req: Req) -> Result<Resp, E>`
/// into an RPC service.
///
/// For `trait Echo` it generates:
///
/// - the trait itself, with each method desugared to
///   `fn method(&self, req: Req) -> impl Future<Output = Result<Resp, E>> + Send`
///   (implementations may still write `async fn`), and `Send + Sync + 'static`
///   as supertraits;
/// - `EchoServer<S>`, an adapter that `rpc::Server` mounts at `/Echo/<method>`;
/// - `EchoClient`, a typed client with one `async fn method(&self, &Req)` per
///   method, returning `Result<Resp, rpc::Error>`.
///
/// `Req` must implement `serde::de::DeserializeOwned` and `serde::Serialize`,
/// `Resp` likewise, and `E: Into<rpc::Status>`.
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(attr.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Expands `#[service]` on `item`; `attr` must be empty.
fn expand(attr: TokenStream2, item: TokenStream2) -> syn::Result<TokenStream2> {
    if !attr.is_empty() {
        return Err(syn::Error::new_spanned(
            attr,
            "#[rpc::service] takes no arguments",
        ));
    }
    let service = model::Service::parse(item)?;
    Ok(generate::service(&service))
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    #[test]
    fn expands_a_valid_trait() {
        let out = expand(
            quote!(),
            quote! {
                /// Echoes.
                pub trait Echo {
                    /// Echo one message.
                    async fn echo(&self, req: Msg) -> Result<Msg, Status>;
                }
            },
        )
        .expect("valid trait expands");
        let text = out.to_string();
        assert!(text.contains("pub struct EchoServer"), "{text}");
        assert!(text.contains("pub struct EchoClient"), "{text}");
        assert!(text.contains("\"/Echo/echo\""), "{text}");
    }

    #[test]
    fn rejects_arguments() {
        let err = expand(quote!(foo), quote! { trait T {} }).expect_err("args refused");
        assert_eq!(err.to_string(), "#[rpc::service] takes no arguments");
    }

    #[test]
    fn reports_every_bad_method() {
        let err = expand(
            quote!(),
            quote! {
                trait T {
                    fn a(&self, r: u8) -> Result<u8, E>;
                    async fn b(&self) -> Result<u8, E>;
                }
            },
        )
        .expect_err("both methods are wrong");
        let messages: Vec<String> = err.into_iter().map(|e| e.to_string()).collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(messages[0].contains("must be `async fn`"), "{messages:?}");
        assert!(
            messages[1].contains("exactly one request argument"),
            "{messages:?}"
        );
    }
}
