//! Code generation from a validated [`Service`].
//!
//! Every path in the output is absolute (`::rpc::...`, `::core::...`,
//! `::std::...`) so the expansion works whatever the user has in scope, and
//! every public item carries a doc comment so `missing_docs` stays quiet in
//! users' crates. Runtime behaviour (JSON, errors, transports) is delegated to
//! helpers in `::rpc::__private` to keep the generated code small.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use crate::model::{Method, Service};

/// The trait, its server adapter and its client.
pub(crate) fn service(s: &Service) -> TokenStream {
    let mut out = trait_def(s);
    out.extend(server(s));
    out.extend(client(s));
    out
}

fn trait_def(s: &Service) -> TokenStream {
    let Service {
        attrs, vis, ident, ..
    } = s;
    let methods = s.methods.iter().map(|m| {
        let Method {
            attrs,
            ident,
            arg,
            request,
            response,
            error,
            ..
        } = m;
        quote! {
            #(#attrs)*
            fn #ident(&self, #arg: #request)
                -> impl ::core::future::Future<
                    Output = ::core::result::Result<#response, #error>
                > + ::core::marker::Send;
        }
    });
    quote! {
        #(#attrs)*
        #vis trait #ident: ::core::marker::Send + ::core::marker::Sync + 'static {
            #(#methods)*
        }
    }
}

/// `/<Service>/<method>` descriptor for one method.
fn method_descriptor(s: &Service, m: &Method) -> TokenStream {
    let service = s.ident.to_string();
    let name = m.ident.to_string();
    let path = format!("/{service}/{name}");
    quote! {
        &::rpc::Method { service: #service, name: #name, path: #path }
    }
}

fn server(s: &Service) -> TokenStream {
    let Service { vis, ident, .. } = s;
    let server = format_ident!("{}Server", ident);
    let service_name = ident.to_string();
    let doc = format!(
        "Serves a [`{ident}`] implementation; mount it with `rpc::ServerBuilder::service`. \
         Each method answers `POST /{ident}/<method>`."
    );
    let names: Vec<String> = s.methods.iter().map(|m| m.ident.to_string()).collect();
    let arms = s.methods.iter().map(|m| {
        let method = &m.ident;
        let name = method.to_string();
        let request = &m.request;
        let descriptor = method_descriptor(s, m);
        quote! {
            #name => {
                let inner = ::std::sync::Arc::clone(&self.inner);
                ::core::option::Option::Some(::std::boxed::Box::pin(async move {
                    let request: #request = ::rpc::__private::decode_request(#descriptor, &body)?;
                    let response = <S as #ident>::#method(&*inner, request)
                        .await
                        .map_err(::core::convert::Into::<::rpc::Status>::into)?;
                    ::rpc::__private::encode_response(&response)
                }))
            }
        }
    });
    quote! {
        #[doc = #doc]
        #vis struct #server<S> {
            inner: ::std::sync::Arc<S>,
        }

        impl<S: #ident> #server<S> {
            /// Wraps an implementation for serving.
            #vis fn new(service: S) -> Self {
                Self { inner: ::std::sync::Arc::new(service) }
            }

            /// Wraps an implementation that is shared with other code.
            #vis fn from_arc(service: ::std::sync::Arc<S>) -> Self {
                Self { inner: service }
            }
        }

        impl<S> ::core::clone::Clone for #server<S> {
            fn clone(&self) -> Self {
                Self { inner: ::std::sync::Arc::clone(&self.inner) }
            }
        }

        impl<S: #ident> ::rpc::Service for #server<S> {
            fn name(&self) -> &'static str {
                #service_name
            }

            fn methods(&self) -> &'static [&'static str] {
                &[#(#names),*]
            }

            fn call(
                &self,
                method: &str,
                body: ::rpc::__private::Bytes,
            ) -> ::core::option::Option<::rpc::__private::CallFuture> {
                match method {
                    #(#arms)*
                    _ => ::core::option::Option::None,
                }
            }
        }
    }
}

fn client(s: &Service) -> TokenStream {
    let Service { vis, ident, .. } = s;
    let client = format_ident!("{}Client", ident);
    let doc = format!(
        "Typed client of [`{ident}`]: one method per RPC, sent through any `rpc::Transport` \
         (an `rpc::Client` over HTTP, or an `rpc::InProcess` router in tests). Cheap to clone."
    );
    let methods = s.methods.iter().map(|m| {
        let Method {
            attrs,
            ident: method,
            arg,
            request,
            response,
            ..
        } = m;
        let docs = attrs.iter().filter(|a| a.path().is_ident("doc"));
        let descriptor = method_descriptor(s, m);
        quote! {
            #(#docs)*
            #vis async fn #method(&self, #arg: &#request)
                -> ::core::result::Result<#response, ::rpc::Error>
            {
                ::rpc::__private::call(&*self.transport, #descriptor, #arg, &self.options).await
            }
        }
    });
    quote! {
        #[doc = #doc]
        #[derive(Clone)]
        #vis struct #client {
            transport: ::std::sync::Arc<dyn ::rpc::Transport>,
            options: ::rpc::CallOptions,
        }

        impl #client {
            /// A client sending through `transport` with default call options.
            #vis fn new<T: ::rpc::Transport>(transport: T) -> Self {
                Self::from_arc(::std::sync::Arc::new(transport))
            }

            /// A client sending through a shared transport.
            #vis fn from_arc(transport: ::std::sync::Arc<dyn ::rpc::Transport>) -> Self {
                Self { transport, options: ::core::default::Default::default() }
            }

            /// A copy of this client whose calls use `options`.
            #vis fn with_options(&self, options: ::rpc::CallOptions) -> Self {
                Self { transport: ::std::sync::Arc::clone(&self.transport), options }
            }

            /// A copy of this client whose calls have `timeout` as their deadline.
            #vis fn with_timeout(&self, timeout: ::core::time::Duration) -> Self {
                self.with_options(::rpc::CallOptions { timeout: ::core::option::Option::Some(timeout), ..self.options })
            }

            /// The options this client's calls use.
            #vis fn options(&self) -> &::rpc::CallOptions {
                &self.options
            }

            #(#methods)*
        }
    }
}
