//! Hostile: imports an interface the host does not grant (`wasi:keyvalue/store`, a WASI
//! proposal outside the 0.2 command world). The host must refuse it, naming the import.

#[allow(missing_docs)]
mod bindings {
    wit_bindgen::generate!({
        inline: r#"
        package test:forbidden;

        world forbidden {
            import wasi:keyvalue/store@0.2.0-draft;
        }

        package wasi:keyvalue@0.2.0-draft {
            interface store {
                get: func(key: string) -> option<list<u8>>;
            }
        }
    "#,
        world: "test:forbidden/forbidden",
        generate_all,
    });
}

fn main() {
    println!("{:?}", bindings::wasi::keyvalue::store::get("secret"));
}
