//! A component that exports a function but no `wasi:cli/run`: the host must refuse it.

wit_bindgen::generate!({
    inline: r#"
        package test:no-run;

        world library {
            export answer: func() -> u32;
        }
    "#,
    world: "test:no-run/library",
});

struct Library;

impl Guest for Library {
    fn answer() -> u32 {
        42
    }
}

export!(Library);
