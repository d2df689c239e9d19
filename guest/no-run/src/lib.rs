//! A component that exports a function but no `wasi:cli/run`: the host must refuse it.

/// The generated bindings, and the export's glue, which is unsafe code wit-bindgen writes.
#[allow(unsafe_code, missing_docs)]
mod bindings {
    wit_bindgen::generate!({
        inline: r#"
            package test:no-run;

            world library {
                export answer: func() -> u32;
            }
        "#,
        world: "test:no-run/library",
    });

    use super::Library;
    export!(Library with_types_in self);
}

struct Library;

impl bindings::Guest for Library {
    fn answer() -> u32 {
        42
    }
}
