//! Answers `/hello` itself, other requests go upstream. Config: `{"greeting": "hi\n"}`, optional.
use weft_sdk::{Action, Filter, LocalResponse, Request};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    greeting: Option<String>,
}

struct Hello(String);

#[weft_sdk::filter]
impl Filter for Hello {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        Ok(Hello(config.greeting.unwrap_or("hello from weft\n".into())))
    }

    fn on_request_headers(&mut self, req: &Request) -> Action {
        match req.path().split('?').next() {
            Some("/hello") => LocalResponse::new(200)
                .header("content-type", "text/plain")
                .body(self.0.as_str())
                .into(),
            _ => Action::Continue,
        }
    }
}
