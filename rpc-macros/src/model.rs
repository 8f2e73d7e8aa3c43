//! The parsed form of a `#[service]` trait.
//!
//! Invariant: a [`Service`] only exists if every method passed validation, so
//! code generation never has to report errors. Validation collects all
//! problems (one `syn::Error` combined from many) rather than stopping at the
//! first, so a user sees every mistake in one compile.

use proc_macro2::TokenStream;
use syn::spanned::Spanned;
use syn::{
    Attribute, FnArg, GenericArgument, Ident, ItemTrait, Pat, PathArguments, ReturnType, TraitItem,
    TraitItemFn, Type, Visibility,
};

/// Method names the generated client uses for itself.
const RESERVED: &[&str] = &["new", "from_arc", "with_options", "with_timeout", "options"];

/// A validated service trait.
pub(crate) struct Service {
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) vis: Visibility,
    pub(crate) ident: Ident,
    pub(crate) methods: Vec<Method>,
}

/// One validated RPC method: `async fn ident(&self, arg: request) -> Result<response, error>`.
pub(crate) struct Method {
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) ident: Ident,
    pub(crate) arg: Ident,
    pub(crate) request: Type,
    pub(crate) response: Type,
    pub(crate) error: Type,
}

impl Service {
    /// Parses and validates the item the attribute sits on.
    pub(crate) fn parse(item: TokenStream) -> syn::Result<Self> {
        let item: ItemTrait = syn::parse2(item.clone()).map_err(|_| {
            syn::Error::new_spanned(item, "#[rpc::service] must be placed on a trait")
        })?;
        let mut errors = Errors::default();
        if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
            errors.push(syn::Error::new_spanned(
                &item.generics,
                "an rpc service trait cannot be generic",
            ));
        }
        if !item.supertraits.is_empty() {
            errors.push(syn::Error::new_spanned(
                &item.supertraits,
                "an rpc service trait cannot declare supertraits; `Send + Sync + 'static` are added for you",
            ));
        }
        let mut methods = Vec::new();
        for trait_item in &item.items {
            match trait_item {
                TraitItem::Fn(f) => match Method::parse(f) {
                    Ok(m) => methods.push(m),
                    Err(e) => errors.push(e),
                },
                other => errors.push(syn::Error::new_spanned(
                    other,
                    "an rpc service trait may only contain `async fn` methods",
                )),
            }
        }
        errors.finish()?;
        Ok(Service {
            attrs: item.attrs,
            vis: item.vis,
            ident: item.ident,
            methods,
        })
    }
}

impl Method {
    fn parse(f: &TraitItemFn) -> syn::Result<Self> {
        let sig = &f.sig;
        let name = &sig.ident;
        if sig.asyncness.is_none() {
            return Err(syn::Error::new_spanned(
                sig.fn_token,
                format!("rpc method `{name}` must be `async fn`"),
            ));
        }
        if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
            return Err(syn::Error::new_spanned(
                &sig.generics,
                format!("rpc method `{name}` cannot be generic"),
            ));
        }
        if let Some(body) = &f.default {
            return Err(syn::Error::new_spanned(
                body,
                format!("rpc method `{name}` cannot have a default body"),
            ));
        }
        if RESERVED.contains(&name.to_string().as_str()) {
            return Err(syn::Error::new_spanned(
                name,
                format!("`{name}` is reserved by the generated client; rename the rpc method"),
            ));
        }
        let (arg, request) = request_argument(sig)?;
        let (response, error) = result_types(sig)?;
        Ok(Method {
            attrs: f.attrs.clone(),
            ident: name.clone(),
            arg,
            request,
            response,
            error,
        })
    }
}

/// Checks `(&self, arg: Type)` and returns the argument's name and type.
fn request_argument(sig: &syn::Signature) -> syn::Result<(Ident, Type)> {
    let name = &sig.ident;
    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none() => {}
        _ => {
            return Err(syn::Error::new(
                sig.paren_token.span.join(),
                format!("rpc method `{name}` must take `&self` as its first argument"),
            ));
        }
    }
    let args: Vec<&FnArg> = inputs.collect();
    if args.len() != 1 {
        return Err(syn::Error::new(
            sig.paren_token.span.join(),
            format!(
                "rpc method `{name}` takes exactly one request argument after `&self`, found {}; \
                 put several values in one request struct",
                args.len()
            ),
        ));
    }
    let FnArg::Typed(pat_type) = args[0] else {
        return Err(syn::Error::new_spanned(
            args[0],
            "expected a typed argument",
        ));
    };
    let arg = match &*pat_type.pat {
        Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => p.ident.clone(),
        Pat::Wild(_) => Ident::new("request", pat_type.pat.span()),
        other => {
            return Err(syn::Error::new_spanned(
                other,
                format!("rpc method `{name}`: the request argument must be a plain name"),
            ));
        }
    };
    Ok((arg, (*pat_type.ty).clone()))
}

/// Checks `-> Result<Resp, Err>` and returns both types.
fn result_types(sig: &syn::Signature) -> syn::Result<(Type, Type)> {
    let name = &sig.ident;
    let wrong = |span: proc_macro2::Span| {
        syn::Error::new(
            span,
            format!(
                "rpc method `{name}` must return `Result<Response, Error>` \
                 where `Error: Into<rpc::Status>`"
            ),
        )
    };
    let ReturnType::Type(_, ty) = &sig.output else {
        return Err(wrong(sig.paren_token.span.close()));
    };
    let Type::Path(path) = &**ty else {
        return Err(wrong(ty.span()));
    };
    let Some(last) = path.path.segments.last() else {
        return Err(wrong(ty.span()));
    };
    if last.ident != "Result" {
        return Err(wrong(ty.span()));
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return Err(wrong(ty.span()));
    };
    let types: Vec<&Type> = args
        .args
        .iter()
        .filter_map(|a| match a {
            GenericArgument::Type(t) => Some(t),
            _ => None,
        })
        .collect();
    match types.as_slice() {
        [ok, err] if args.args.len() == 2 => Ok(((*ok).clone(), (*err).clone())),
        _ => Err(wrong(ty.span())),
    }
}

/// Collects several errors into one.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}
