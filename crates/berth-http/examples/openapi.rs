//! Prints the OpenAPI document of the router to stdout (what `GET /openapi.json` serves).
//! `cargo xtask openapi` runs it to write and check the committed `openapi.json`.

fn main() {
    print!("{}", berth_http::openapi_json());
}
