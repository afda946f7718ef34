//! `#[activity]` and `#[orchestration]`: typed handles for plain
//! durable-core code, so that `ctx.call(say_hello, &city)` is checked at
//! compile time.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, LitStr, ReturnType, Type};

use crate::attr::{self, Errors};

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Activity,
    Orchestration,
}

impl Kind {
    fn what(self) -> &'static str {
        match self {
            Self::Activity => "an #[activity] function",
            Self::Orchestration => "an #[orchestration] function",
        }
    }

    fn context(self) -> &'static str {
        match self {
            Self::Activity => "ActivityContext",
            Self::Orchestration => "OrchestrationContext",
        }
    }
}

struct Args {
    name: Option<LitStr>,
    krate: syn::Path,
}

fn parse_args(tokens: TokenStream, errors: &mut Errors) -> Args {
    let mut args = Args {
        name: None,
        krate: syn::parse_quote!(::durable_core),
    };
    match attr::parse_args(tokens) {
        Ok(parsed) => {
            for arg in attr::check_keys(parsed, &["name", "crate"], errors) {
                match attr::key(&arg).as_str() {
                    "name" => args.name = attr::name_value(&arg, "name", errors),
                    "crate" => {
                        if let Some(path) = attr::crate_path(&arg, errors) {
                            args.krate = path;
                        }
                    }
                    _ => {}
                }
            }
        }
        Err(e) => errors.push(e),
    }
    args
}

/// The parsed function: its context and input parameter types.
struct DurableFn {
    item: ItemFn,
    context: Option<Type>,
    input: Option<Type>,
    output: Option<Type>,
}

fn parse_fn(kind: Kind, item: ItemFn, errors: &mut Errors) -> DurableFn {
    let what = kind.what();
    let sig = &item.sig;
    let signature = format!(
        "`async fn {}(ctx: {}, input: I) -> Result<O, E>`",
        sig.ident,
        kind.context()
    );
    if sig.asyncness.is_none() {
        errors.spanned(sig.fn_token, format!("{what} must be async: {signature}"));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.spanned(&sig.generics, format!("{what} cannot be generic"));
    }
    let mut types = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => errors.spanned(r, format!("{what} cannot take `self`")),
            FnArg::Typed(t) => types.push((*t.ty).clone()),
        }
    }
    if types.len() != 2 {
        errors.spanned(
            &sig.inputs,
            format!("{what} takes two parameters, the context and the input: {signature}"),
        );
    }
    let output = match &sig.output {
        ReturnType::Type(_, ty) => Some((**ty).clone()),
        ReturnType::Default => {
            errors.spanned(
                &sig.ident,
                format!("{what} must return `Result<O, E>`: {signature}"),
            );
            None
        }
    };
    let mut types = types.into_iter();
    DurableFn {
        context: types.next(),
        input: types.next(),
        output,
        item,
    }
}

pub(crate) fn expand(kind: Kind, attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let args = parse_args(attr, &mut errors);
    let item = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(item) => item,
        Err(_) => {
            errors.spanned(&item, format!("{} goes on an async fn", kind.what()));
            let error = errors.finish().unwrap_err().to_compile_error();
            return quote!(#item #error);
        }
    };
    let parsed = parse_fn(kind, item, &mut errors);
    if let Err(e) = errors.finish() {
        let item = &parsed.item;
        let error = e.to_compile_error();
        return quote!(#item #error);
    }
    expand_valid(kind, &args, parsed)
}

fn expand_valid(kind: Kind, args: &Args, parsed: DurableFn) -> TokenStream {
    let krate = &args.krate;
    let DurableFn {
        mut item,
        context,
        input,
        output,
    } = parsed;
    let (Some(context), Some(input), Some(output)) = (context, input, output) else {
        unreachable!("validated before expansion")
    };
    let name = item.sig.ident.clone();
    let vis = item.vis.clone();
    let durable_name = args
        .name
        .clone()
        .unwrap_or_else(|| LitStr::new(&syn::ext::IdentExt::unraw(&name).to_string(), name.span()));
    let prefix = match kind {
        Kind::Activity => "__durable_activity_",
        Kind::Orchestration => "__durable_orchestration_",
    };
    let hidden = quote::format_ident!("{}{}", prefix, syn::ext::IdentExt::unraw(&name));
    let (docs, attrs): (Vec<_>, Vec<_>) = item.attrs.drain(..).partition(|a| a.path().is_ident("doc"));
    item.attrs = attrs;
    item.sig.ident = hidden.clone();
    item.vis = syn::Visibility::Inherited;

    let (trait_name, context_ty, register) = match kind {
        Kind::Activity => (
            quote!(Activity),
            quote!(#krate::ActivityContext),
            quote!(activity),
        ),
        Kind::Orchestration => (
            quote!(Orchestration),
            quote!(#krate::OrchestrationContext),
            quote!(orchestration),
        ),
    };
    let input_check = quote_spanned!(input.span()=> #krate::__private::assert_payload::<#input>());
    let output_ty = quote_spanned!(output.span()=> <#output as #krate::__private::FnReturn>::Ok);
    let context_check = quote_spanned! {context.span()=>
        #krate::__private::assert_context::<#context, #context_ty>()
    };
    let register_call = quote_spanned! {name.span()=>
        registry.#register(#durable_name, #hidden)
    };
    quote! {
        #(#docs)*
        #[allow(non_camel_case_types)]
        #[derive(::core::fmt::Debug, ::core::clone::Clone, ::core::marker::Copy, ::core::default::Default)]
        #vis struct #name;

        #[doc(hidden)]
        #item

        const _: () = {
            const _: () = #input_check;
            const _: () = #context_check;

            impl #krate::__private::#trait_name for #name {
                type Input = #input;
                type Output = #output_ty;
                const NAME: &'static str = #durable_name;
            }

            impl #krate::__private::Register for #name {
                fn register(self, registry: #krate::Registry) -> #krate::Registry {
                    #register_call
                }
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_needs_two_parameters() {
        let out = expand(
            Kind::Activity,
            quote!(),
            quote!(
                async fn say(city: String) -> Result<String, E> {
                    Ok(city)
                }
            ),
        )
        .to_string();
        assert!(out.contains("takes two parameters"), "{out}");
    }

    #[test]
    fn orchestration_expands_with_name() {
        let out = expand(
            Kind::Orchestration,
            quote!(name = "hello-cities"),
            quote!(
                async fn hello(ctx: OrchestrationContext, cities: Vec<String>) -> Result<(), E> {
                    Ok(())
                }
            ),
        )
        .to_string();
        assert!(out.contains("\"hello-cities\""), "{out}");
        assert!(!out.contains("compile_error"), "{out}");
    }
}
