//! `#[executor]` on an async fn or on an impl block of `#[handler]`s.
//!
//! Parse ([`ExecutorArgs`], [`FnExecutor`], [`ImplExecutor`]: the syntax
//! nodes, kept for their spans), validate (every mistake collected), and
//! expand (cannot fail).

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{FnArg, ImplItem, ImplItemFn, Item, ItemFn, ItemImpl, LitStr, ReturnType, Type};

use crate::attr::{self, Errors};

/// The arguments of `#[executor(...)]`.
pub(crate) struct ExecutorArgs {
    id: Option<LitStr>,
    retry: Option<Retry>,
    krate: syn::Path,
}

struct Retry {
    max_attempts: u32,
    interval_ms: u64,
    backoff: f64,
    max_interval_ms: Option<u64>,
}

const ACCEPTED: &[&str] = &[
    "id",
    "max_attempts",
    "retry_interval",
    "backoff",
    "max_retry_interval",
    "crate",
];

impl ExecutorArgs {
    fn parse(tokens: TokenStream, errors: &mut Errors) -> Self {
        let mut args = Self {
            id: None,
            retry: None,
            krate: syn::parse_quote!(::agent_workflows),
        };
        let parsed = match attr::parse_args(tokens) {
            Ok(parsed) => parsed,
            Err(e) => {
                errors.push(e);
                return args;
            }
        };
        let mut max_attempts = None;
        let mut retry_keys = Vec::new();
        let mut interval = None;
        let mut backoff = None;
        let mut max_interval = None;
        for arg in attr::check_keys(parsed, ACCEPTED, errors) {
            match attr::key(&arg).as_str() {
                "id" => args.id = attr::name_value(&arg, "id", errors),
                "crate" => {
                    if let Some(path) = attr::crate_path(&arg, errors) {
                        args.krate = path;
                    }
                }
                "max_attempts" => max_attempts = attr::positive_int(&arg, errors),
                "retry_interval" => {
                    interval = attr::duration(&arg, errors);
                    retry_keys.push(arg.key.clone());
                }
                "backoff" => {
                    backoff = attr::backoff(&arg, errors);
                    retry_keys.push(arg.key.clone());
                }
                "max_retry_interval" => {
                    max_interval = attr::duration(&arg, errors);
                    retry_keys.push(arg.key.clone());
                }
                _ => {}
            }
        }
        match max_attempts {
            Some(max_attempts) => {
                args.retry = Some(Retry {
                    max_attempts,
                    interval_ms: interval.map_or(1_000, |d| d.as_millis() as u64),
                    backoff: backoff.unwrap_or(1.0),
                    max_interval_ms: max_interval.map(|d| d.as_millis() as u64),
                });
            }
            None => {
                for key in retry_keys {
                    errors.spanned(
                        &key,
                        format!("`{key}` needs `max_attempts`: add `max_attempts = 3`"),
                    );
                }
            }
        }
        args
    }

    fn retry_policy(&self) -> TokenStream {
        let krate = &self.krate;
        match &self.retry {
            None => quote!(::core::option::Option::None),
            Some(retry) => {
                let Retry {
                    max_attempts,
                    interval_ms,
                    backoff,
                    max_interval_ms,
                } = retry;
                let max_interval =
                    max_interval_ms.map(|ms| quote!(.max_interval(::core::time::Duration::from_millis(#ms))));
                quote! {
                    ::core::option::Option::Some(
                        #krate::durable_core::RetryPolicy::new(#max_attempts, ::core::time::Duration::from_millis(#interval_ms))
                            .backoff_coefficient(#backoff)
                            #max_interval
                    )
                }
            }
        }
    }
}

/// Entry point: dispatches on the item.
pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let parsed = match syn::parse2::<Item>(item.clone()) {
        Ok(parsed) => parsed,
        Err(e) => {
            let error = e.to_compile_error();
            return quote!(#item #error);
        }
    };
    let mut errors = Errors::default();
    let args = ExecutorArgs::parse(attr, &mut errors);
    match parsed {
        Item::Fn(f) => {
            let executor = FnExecutor::parse(f, &mut errors);
            match errors.finish() {
                Ok(()) => executor.expand(&args),
                Err(e) => fallback(executor.item.into_token_stream(), e),
            }
        }
        Item::Impl(i) => {
            let executor = ImplExecutor::parse(i, &mut errors);
            match errors.finish() {
                Ok(()) => executor.expand(&args),
                Err(e) => fallback(executor.item.into_token_stream(), e),
            }
        }
        other => {
            errors.spanned(
                &other,
                "#[executor] goes on an `async fn` or on an `impl` block with #[handler] methods",
            );
            fallback(item, errors.finish().unwrap_err())
        }
    }
}

/// The user's item, unchanged, and the errors: one error to read, and
/// rust-analyzer still sees the item.
fn fallback(item: TokenStream, error: syn::Error) -> TokenStream {
    let error = error.to_compile_error();
    quote!(#item #error)
}

/// The message and context parameters of a handler.
struct Params {
    message: Option<Type>,
    has_ctx: bool,
}

const SIGNATURE: &str = "(message: T, ctx: &mut WorkflowContext)";

fn check_params<'a>(
    inputs: impl Iterator<Item = &'a FnArg>,
    span: Span,
    what: &str,
    errors: &mut Errors,
) -> Params {
    let typed: Vec<&syn::PatType> = inputs
        .filter_map(|arg| match arg {
            FnArg::Typed(t) => Some(t),
            FnArg::Receiver(r) => {
                errors.spanned(
                    r,
                    format!("{what} cannot take `self`; use an impl block with #[handler] methods"),
                );
                None
            }
        })
        .collect();
    if typed.is_empty() {
        errors.at(
            span,
            format!("{what} must take the message it handles: `{SIGNATURE}` (the context is optional)"),
        );
    }
    for extra in typed.iter().skip(2) {
        errors.spanned(
            extra,
            format!("{what} takes at most two parameters: `{SIGNATURE}`; remove this one"),
        );
    }
    Params {
        message: typed.first().map(|t| (*t.ty).clone()),
        has_ctx: typed.len() >= 2,
    }
}

fn check_sig(sig: &syn::Signature, what: &str, errors: &mut Errors) {
    if sig.asyncness.is_none() {
        errors.spanned(
            sig.fn_token,
            format!("{what} must be async: write `async fn {}`", sig.ident),
        );
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.spanned(
            &sig.generics,
            format!("{what} cannot be generic; use concrete message types"),
        );
    }
    if let Some(c) = &sig.constness {
        errors.spanned(c, format!("{what} cannot be `const`"));
    }
    if let Some(v) = &sig.variadic {
        errors.spanned(v, format!("{what} cannot be variadic"));
    }
    if let ReturnType::Default = sig.output {
        errors.spanned(
            &sig.ident,
            format!(
                "{what} must return `Result<Output, ExecutorError>`; add `-> Result<Output, ExecutorError>`"
            ),
        );
    }
}

fn return_type(sig: &syn::Signature) -> Type {
    match &sig.output {
        ReturnType::Type(_, ty) => (**ty).clone(),
        ReturnType::Default => syn::parse_quote!(()),
    }
}

/// `#[executor] async fn name(message: T, ctx: &mut WorkflowContext) -> Result<O, E>`.
pub(crate) struct FnExecutor {
    item: ItemFn,
    message: Type,
    has_ctx: bool,
    output: Type,
}

impl FnExecutor {
    fn parse(item: ItemFn, errors: &mut Errors) -> Self {
        let what = "an executor function";
        check_sig(&item.sig, what, errors);
        let params = check_params(item.sig.inputs.iter(), item.sig.ident.span(), what, errors);
        Self {
            message: params.message.unwrap_or_else(|| syn::parse_quote!(())),
            has_ctx: params.has_ctx,
            output: return_type(&item.sig),
            item,
        }
    }

    fn expand(self, args: &ExecutorArgs) -> TokenStream {
        let krate = &args.krate;
        let Self {
            mut item,
            message,
            has_ctx,
            output,
        } = self;
        let name = item.sig.ident.clone();
        let vis = item.vis.clone();
        let id = args
            .id
            .clone()
            .unwrap_or_else(|| LitStr::new(&name.unraw_string(), name.span()));
        let hidden = format_ident!("__durable_executor_{}", name.unraw_string());
        let (docs, attrs): (Vec<_>, Vec<_>) = item.attrs.drain(..).partition(|a| a.path().is_ident("doc"));
        item.attrs = attrs;
        item.sig.ident = hidden.clone();
        item.vis = syn::Visibility::Inherited;
        let retry = args.retry_policy();
        let call = if has_ctx {
            quote!(#hidden(message, ctx))
        } else {
            quote!(#hidden(message))
        };
        let output_ty = quote_spanned!(output.span()=> <#output as #krate::__private::HandlerReturn>::Ok);
        let handler = quote_spanned!(output.span()=> __durable_handler);
        let on = quote_spanned!(message.span()=> .on::<#message>);
        let on = quote!(#on(#handler));
        let boxed = quote_spanned!(name.span()=> ::std::boxed::Box::pin);
        let convert = quote_spanned!(output.span()=> #krate::__private::HandlerReturn::into_handler_result);
        let output_of_self = quote_spanned!(output.span()=> <#name as #krate::__private::Executor>::Output);
        quote! {
            #(#docs)*
            #[allow(non_camel_case_types)]
            #[derive(::core::fmt::Debug, ::core::clone::Clone, ::core::marker::Copy, ::core::default::Default)]
            #vis struct #name;

            #[doc(hidden)]
            #item

            const _: () = {
                impl #krate::__private::Executor for #name {
                    type Output = #output_ty;

                    fn id(&self) -> &str {
                        #id
                    }

                    fn retry_policy(&self) -> ::core::option::Option<#krate::durable_core::RetryPolicy> {
                        #retry
                    }

                    fn handlers() -> #krate::__private::HandlerSet<Self> {
                        fn __durable_handler<'a>(
                            _executor: &'a #name,
                            message: #message,
                            ctx: &'a mut #krate::__private::WorkflowContext,
                        ) -> #krate::__private::BoxFuture<
                            'a,
                            ::core::result::Result<#output_of_self, #krate::__private::ExecutorError>,
                        > {
                            let _ = &ctx;
                            #boxed(async move { #convert(#call.await) })
                        }
                        #krate::__private::HandlerSet::new() #on
                    }
                }

                impl #krate::__private::Handles<#message> for #name {}

                impl #krate::__private::StaticExecutorId for #name {
                    const ID: &'static str = #id;
                }
            };
        }
    }
}

trait UnrawString {
    fn unraw_string(&self) -> String;
}

impl UnrawString for syn::Ident {
    fn unraw_string(&self) -> String {
        syn::ext::IdentExt::unraw(self).to_string()
    }
}

struct Handler {
    method: syn::Ident,
    message: Type,
    has_ctx: bool,
    output: Type,
}

/// `#[executor] impl Type { #[handler] async fn on_x(&self, message: X, ctx: &mut WorkflowContext) -> Result<O, E> ... }`.
pub(crate) struct ImplExecutor {
    item: ItemImpl,
    handlers: Vec<Handler>,
}

fn is_handler_attr(attr: &syn::Attribute) -> bool {
    attr.path().segments.last().is_some_and(|s| s.ident == "handler")
}

impl ImplExecutor {
    fn parse(mut item: ItemImpl, errors: &mut Errors) -> Self {
        if let Some((_, path, _)) = &item.trait_ {
            errors.spanned(
                path,
                "#[executor] goes on an inherent impl block (`impl MyExecutor { ... }`), not on a trait impl",
            );
        }
        if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
            errors.spanned(
                &item.generics,
                "an executor type cannot be generic; hold configuration in fields",
            );
        }
        if !matches!(&*item.self_ty, Type::Path(p) if p.qself.is_none()) {
            errors.spanned(&item.self_ty, "#[executor] needs an impl block of a named type");
        }
        let mut handlers = Vec::new();
        for impl_item in &mut item.items {
            let ImplItem::Fn(method) = impl_item else {
                continue;
            };
            let before = method.attrs.len();
            method.attrs.retain(|a| !is_handler_attr(a));
            if method.attrs.len() == before {
                continue;
            }
            handlers.push(Self::parse_handler(method, errors));
        }
        if handlers.is_empty() {
            errors.spanned(
                &item.self_ty,
                "an #[executor] impl block needs at least one #[handler] method: \
                 `#[handler] async fn on_message(&self, message: T, ctx: &mut WorkflowContext) -> Result<O, ExecutorError>`",
            );
        }
        Self { item, handlers }
    }

    fn parse_handler(method: &ImplItemFn, errors: &mut Errors) -> Handler {
        let what = "a #[handler] method";
        check_sig(&method.sig, what, errors);
        match method.sig.receiver() {
            Some(r) if r.reference.is_some() && r.mutability.is_none() => {}
            Some(r) => errors.spanned(
                r,
                "a #[handler] method takes `&self`: an executor may run several handlers at once, so keep \
                 changing data in shared state (`ctx.set_state`) or behind a lock",
            ),
            None => errors.spanned(
                &method.sig.ident,
                "a #[handler] method takes `&self` first: `async fn name(&self, message: T, ctx: &mut WorkflowContext)`",
            ),
        }
        let params = check_params(
            method
                .sig
                .inputs
                .iter()
                .filter(|a| !matches!(a, FnArg::Receiver(_))),
            method.sig.ident.span(),
            what,
            errors,
        );
        Handler {
            method: method.sig.ident.clone(),
            message: params.message.unwrap_or_else(|| syn::parse_quote!(())),
            has_ctx: params.has_ctx,
            output: return_type(&method.sig),
        }
    }

    fn expand(self, args: &ExecutorArgs) -> TokenStream {
        let krate = &args.krate;
        let Self { item, handlers } = self;
        let self_ty = &item.self_ty;
        let id = args.id.clone().unwrap_or_else(|| {
            let name = match &**self_ty {
                Type::Path(p) => p.path.segments.last().map(|s| s.ident.unraw_string()),
                _ => None,
            };
            LitStr::new(&name.unwrap_or_default(), self_ty.span())
        });
        let retry = args.retry_policy();
        let first_output = &handlers[0].output;
        let output_ty =
            quote_spanned!(first_output.span()=> <#first_output as #krate::__private::HandlerReturn>::Ok);
        let mut fns = Vec::new();
        let mut ons = Vec::new();
        let mut handles = Vec::new();
        for (i, handler) in handlers.iter().enumerate() {
            let Handler {
                method,
                message,
                has_ctx,
                output,
            } = handler;
            let fn_name = format_ident!("__durable_handler_{}", i);
            let call = if *has_ctx {
                quote!(<#self_ty>::#method(executor, message, ctx))
            } else {
                quote!(<#self_ty>::#method(executor, message))
            };
            let same = quote_spanned! {output.span()=>
                <<#output as #krate::__private::HandlerReturn>::Ok as #krate::__private::SameOutput<
                    <#self_ty as #krate::__private::Executor>::Output,
                >>::same
            };
            let boxed = quote_spanned!(method.span()=> ::std::boxed::Box::pin);
            fns.push(quote! {
                fn #fn_name<'a>(
                    executor: &'a #self_ty,
                    message: #message,
                    ctx: &'a mut #krate::__private::WorkflowContext,
                ) -> #krate::__private::BoxFuture<
                    'a,
                    ::core::result::Result<<#self_ty as #krate::__private::Executor>::Output, #krate::__private::ExecutorError>,
                > {
                    let _ = &ctx;
                    #boxed(async move {
                        #krate::__private::HandlerReturn::into_handler_result(#call.await).map(#same)
                    })
                }
            });
            let on = quote_spanned!(message.span()=> .on::<#message>);
            let handler = quote_spanned!(output.span()=> #fn_name);
            ons.push(quote!(#on(#handler)));
            handles.push(quote!(impl #krate::__private::Handles<#message> for #self_ty {}));
        }
        quote! {
            #item

            const _: () = {
                impl #krate::__private::Executor for #self_ty {
                    type Output = #output_ty;

                    fn id(&self) -> &str {
                        #id
                    }

                    fn retry_policy(&self) -> ::core::option::Option<#krate::durable_core::RetryPolicy> {
                        #retry
                    }

                    fn handlers() -> #krate::__private::HandlerSet<Self> {
                        #(#fns)*
                        #krate::__private::HandlerSet::new() #(#ons)*
                    }
                }

                #(#handles)*

                impl #krate::__private::StaticExecutorId for #self_ty {
                    const ID: &'static str = #id;
                }
            };
        }
    }
}

/// `#[handler]` outside an `#[executor]` impl block.
pub(crate) fn expand_handler(item: TokenStream) -> TokenStream {
    let error = syn::Error::new(
        Span::call_site(),
        "#[handler] marks methods of an `#[executor] impl` block; put #[executor] on the impl block",
    )
    .to_compile_error();
    quote!(#item #error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors_of(attr: TokenStream, item: TokenStream) -> Vec<String> {
        let out = expand(attr, item).to_string();
        out.split("compile_error !")
            .skip(1)
            .map(|s| s.split('"').nth(1).unwrap_or_default().to_owned())
            .collect()
    }

    #[test]
    fn fn_executor_expands() {
        let out = expand(
            quote!(id = "double"),
            quote!(
                async fn double(n: u32, ctx: &mut WorkflowContext) -> Result<u32, ExecutorError> {
                    Ok(n * 2)
                }
            ),
        )
        .to_string();
        assert!(out.contains("struct double"), "{out}");
        assert!(out.contains("__durable_executor_double"), "{out}");
        assert!(out.contains("\"double\""), "{out}");
        assert!(!out.contains("compile_error"), "{out}");
    }

    #[test]
    fn all_signature_errors_are_reported() {
        let errors = errors_of(
            quote!(idd = "x"),
            quote!(
                fn bad() {}
            ),
        );
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors[0].starts_with("unknown argument `idd`"));
        assert!(errors[1].contains("must be async"));
    }

    #[test]
    fn impl_executor_needs_handlers() {
        let errors = errors_of(quote!(), quote!(impl Foo { fn helper(&self) {} }));
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("at least one #[handler]"));
    }

    #[test]
    fn retry_arguments_need_max_attempts() {
        let errors = errors_of(
            quote!(retry_interval = "1s"),
            quote!(
                async fn f(n: u32) -> Result<(), ExecutorError> {
                    Ok(())
                }
            ),
        );
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("needs `max_attempts`"));
    }
}
