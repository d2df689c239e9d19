//! Hostile: imports `wasi:http`, which plugins are not granted (no network of any kind). The
//! host must refuse it, naming the import. (A draft version, so that the component linker does
//! not try to merge this stub with the real wasi:http 0.2 it knows.)

#[allow(missing_docs)]
mod bindings {
    wit_bindgen::generate!({
        inline: r#"
        package test:forbidden-http;

        world forbidden-http {
            import wasi:http/outgoing-handler@0.3.0-draft;
        }

        package wasi:http@0.3.0-draft {
            interface outgoing-handler {
                handle: func(url: string) -> u32;
            }
        }
    "#,
        world: "test:forbidden-http/forbidden-http",
        generate_all,
    });
}

fn main() {
    println!(
        "{}",
        bindings::wasi::http::outgoing_handler::handle("http://127.0.0.1/")
    );
}
