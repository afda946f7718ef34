//! `#[workflow]` on a fn that builds a graph: a workflow type with a
//! stable name that registers its orchestration and every executor.
//!
//! Besides the type, the expansion checks at compile time that the
//! executors passed to the builder by path (`.then(validate)`) have
//! distinct ids.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::visit::Visit;
use syn::{Expr, ItemFn, LitStr, ReturnType};

use crate::attr::{self, Errors};

struct WorkflowArgs {
    name: Option<LitStr>,
    krate: syn::Path,
}

impl WorkflowArgs {
    fn parse(tokens: TokenStream, errors: &mut Errors) -> Self {
        let mut args = Self {
            name: None,
            krate: syn::parse_quote!(::agent_workflows),
        };
        let parsed = match attr::parse_args(tokens) {
            Ok(parsed) => parsed,
            Err(e) => {
                errors.push(e);
                return args;
            }
        };
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
        args
    }
}

pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let args = WorkflowArgs::parse(attr, &mut errors);
    let item = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(item) => item,
        Err(_) => {
            errors.spanned(
                &item,
                "#[workflow] goes on a fn that builds and returns a `Workflow<Input>`",
            );
            let error = errors.finish().unwrap_err().to_compile_error();
            return quote!(#item #error);
        }
    };
    validate(&item, &mut errors);
    match errors.finish() {
        Ok(()) => expand_valid(&args, item),
        Err(e) => {
            let error = e.to_compile_error();
            quote!(#item #error)
        }
    }
}

fn validate(item: &ItemFn, errors: &mut Errors) {
    let sig = &item.sig;
    if let Some(a) = &sig.asyncness {
        errors.spanned(a, "a #[workflow] function only builds the graph: remove `async`");
    }
    if !sig.inputs.is_empty() {
        errors.spanned(
            &sig.inputs,
            "a #[workflow] function takes no parameters: build any configuration inside it",
        );
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.spanned(&sig.generics, "a #[workflow] function cannot be generic");
    }
    if let ReturnType::Default = sig.output {
        errors.spanned(
            &sig.ident,
            "a #[workflow] function must return `Workflow<Input>`; add `-> Workflow<Input>`",
        );
    }
}

/// The builder methods and which of their arguments are executors.
const EXECUTOR_ARGS: &[(&str, &[usize])] = &[
    ("start", &[0]),
    ("then", &[0]),
    ("then_if", &[0]),
    ("add_edge", &[0, 1]),
    ("add_edge_if", &[0, 1]),
    ("add_dynamic_edge", &[0, 1]),
    ("add_switch", &[0]),
    ("add_fan_out", &[0]),
    ("add_fan_in", &[1]),
    ("from", &[0]),
    ("case", &[1]),
    ("default_case", &[0]),
    ("to", &[0]),
];

/// Finds the executors passed by path to builder methods, and the names
/// bound by patterns (locals, which are not executors known at compile
/// time).
#[derive(Default)]
struct Executors {
    paths: Vec<syn::Path>,
    locals: Vec<syn::Ident>,
}

impl Executors {
    fn collect(&mut self, method: &syn::Ident, args: &syn::punctuated::Punctuated<Expr, syn::Token![,]>) {
        let Some((_, positions)) = EXECUTOR_ARGS.iter().find(|(name, _)| method == name) else {
            return;
        };
        for &i in *positions {
            if let Some(Expr::Path(p)) = args.iter().nth(i) {
                if p.qself.is_none() && !self.paths.contains(&p.path) {
                    self.paths.push(p.path.clone());
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for Executors {
    // Children first, so that a chain's executors come in source order.
    fn visit_expr_method_call(&mut self, call: &'ast syn::ExprMethodCall) {
        syn::visit::visit_expr_method_call(self, call);
        self.collect(&call.method, &call.args);
    }

    fn visit_expr_call(&mut self, call: &'ast syn::ExprCall) {
        syn::visit::visit_expr_call(self, call);
        if let Expr::Path(p) = &*call.func {
            if let Some(last) = p.path.segments.last() {
                self.collect(&last.ident, &call.args);
            }
        }
    }

    fn visit_pat_ident(&mut self, pat: &'ast syn::PatIdent) {
        self.locals.push(pat.ident.clone());
        syn::visit::visit_pat_ident(self, pat);
    }
}

fn expand_valid(args: &WorkflowArgs, mut item: ItemFn) -> TokenStream {
    let krate = &args.krate;
    let name = item.sig.ident.clone();
    let vis = item.vis.clone();
    let workflow_name = args
        .name
        .clone()
        .unwrap_or_else(|| LitStr::new(&syn::ext::IdentExt::unraw(&name).to_string(), name.span()));
    let hidden = quote::format_ident!("__durable_workflow_{}", syn::ext::IdentExt::unraw(&name));
    let output = match &item.sig.output {
        ReturnType::Type(_, ty) => (**ty).clone(),
        ReturnType::Default => syn::parse_quote!(()),
    };

    let mut executors = Executors::default();
    executors.visit_block(&item.block);
    let paths: Vec<&syn::Path> = executors
        .paths
        .iter()
        .filter(|p| !(p.segments.len() == 1 && executors.locals.contains(&p.segments[0].ident)))
        .collect();
    let mut checks = Vec::new();
    for (j, second) in paths.iter().enumerate() {
        for first in &paths[..j] {
            let message = format!(
                "duplicate executor id: `{}` has the same id as `{}`; give one of them another id with #[executor(id = \"...\")]",
                second.to_token_stream().to_string().replace(' ', ""),
                first.to_token_stream().to_string().replace(' ', ""),
            );
            checks.push(quote_spanned! {second.span()=>
                const _: () = if #krate::__private::str_eq(
                    #krate::__private::id_of(&#first),
                    #krate::__private::id_of(&#second),
                ) {
                    ::core::panic!(#message)
                };
            });
        }
    }

    let (docs, attrs): (Vec<_>, Vec<_>) = item.attrs.drain(..).partition(|a| a.path().is_ident("doc"));
    item.attrs = attrs;
    item.sig.ident = hidden.clone();
    item.vis = syn::Visibility::Inherited;
    let stmts = &item.block.stmts;
    item.block = syn::parse_quote!({
        #(#checks)*
        #(#stmts)*
    });
    let input_ty = quote_spanned!(output.span()=> <#output as #krate::__private::WorkflowReturn>::Input);
    quote! {
        #(#docs)*
        #[allow(non_camel_case_types)]
        #[derive(::core::fmt::Debug, ::core::clone::Clone, ::core::marker::Copy, ::core::default::Default)]
        #vis struct #name;

        #[doc(hidden)]
        #item

        const _: () = {
            impl #krate::__private::WorkflowDefinition for #name {
                type Input = #input_ty;

                const NAME: &'static str = #workflow_name;

                fn build() -> #krate::__private::Workflow<Self::Input> {
                    #krate::__private::WorkflowReturn::into_workflow(#hidden())
                }
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_executor_paths_but_not_locals() {
        let block: syn::Block = syn::parse_quote!({
            let local = make();
            WorkflowBuilder::start(a)
                .then(b)
                .then(local)
                .add_edge(c, a)
                .max_supersteps(LIMIT)
                .add_switch(b, Switch::new().case(|x| *x > 1, d).default_case(e))
                .build()
        });
        let mut executors = Executors::default();
        executors.visit_block(&block);
        let names: Vec<String> = executors
            .paths
            .iter()
            .filter(|p| !executors.locals.contains(&p.segments[0].ident))
            .map(|p| p.to_token_stream().to_string())
            .collect();
        assert_eq!(names, ["a", "b", "c", "d", "e"]);
    }

    #[test]
    fn rejects_parameters_and_async() {
        let out = expand(
            quote!(),
            quote!(
                async fn wf(x: u32) -> Workflow<u32> {
                    todo()
                }
            ),
        )
        .to_string();
        assert!(out.contains("remove `async`"), "{out}");
        assert!(out.contains("takes no parameters"), "{out}");
    }
}
