use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{API_ADDR_FILE, ErrorBody};

/// Talking to a node's API failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No running node found for the data directory.
    #[error("no running node found in {dir} ({reason}); start one with `weft run` or `weft up`")]
    NoNode {
        /// The data directory.
        dir: String,
        /// What was missing.
        reason: String,
    },
    /// The node did not answer.
    #[error("node at {addr} is not answering: {reason}")]
    Unreachable {
        /// API address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The node answered with an error.
    #[error("{message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The node's message.
        message: String,
    },
}

/// A blocking client for one node's API.
#[derive(Clone)]
pub struct ApiClient {
    base: String,
    token: String,
    session: Option<String>,
    agent: ureq::Agent,
}

impl ApiClient {
    /// A client for the node that uses `dir` as its data directory.
    pub fn for_data_dir(dir: &Path) -> Result<ApiClient, ApiError> {
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .map(|s| s.trim().to_string())
                .map_err(|e| ApiError::NoNode {
                    dir: dir.display().to_string(),
                    reason: format!("{name}: {e}"),
                })
        };
        let addr = read(API_ADDR_FILE)?;
        let token = read("api.token")?;
        Ok(ApiClient::new(&addr, &token))
    }

    /// A client for the API at `addr` (host:port) with `token`.
    pub fn new(addr: &str, token: &str) -> ApiClient {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        ApiClient {
            base: format!("http://{addr}"),
            token: token.to_string(),
            session: None,
            agent,
        }
    }

    /// The same node, acting as the account of `session` (a [`weft_data::Session`] as text)
    /// on data requests.
    pub fn with_session(mut self, session: String) -> ApiClient {
        self.session = Some(session);
        self
    }

    /// The API address (host:port).
    pub fn addr(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    fn authed<B>(&self, mut req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        if !self.token.is_empty() {
            req = req.header("Authorization", format!("Bearer {}", self.token));
        }
        if let Some(s) = &self.session {
            req = req.header(crate::SESSION_HEADER, s);
        }
        req
    }

    fn transfer_agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .build()
            .into()
    }

    /// POST a raw body streamed from `reader` (no overall time limit).
    pub fn upload<T: DeserializeOwned>(
        &self,
        path: &str,
        reader: &mut dyn std::io::Read,
    ) -> Result<T, ApiError> {
        self.upload_with(false, path, reader)
    }

    /// PUT a raw body streamed from `reader` (no overall time limit).
    pub fn upload_put<T: DeserializeOwned>(
        &self,
        path: &str,
        reader: &mut dyn std::io::Read,
    ) -> Result<T, ApiError> {
        self.upload_with(true, path, reader)
    }

    /// DELETE a resource.
    pub fn delete(&self, path: &str) -> Result<(), ApiError> {
        let resp = self
            .authed(self.agent.delete(format!("{}{path}", self.base)))
            .call();
        match resp {
            Ok(r) if r.status().is_success() => Ok(()),
            other => self.decode::<serde_json::Value>(other).map(|_| ()),
        }
    }

    fn upload_with<T: DeserializeOwned>(
        &self,
        put: bool,
        path: &str,
        reader: &mut dyn std::io::Read,
    ) -> Result<T, ApiError> {
        let agent = Self::transfer_agent();
        let url = format!("{}{path}", self.base);
        let req = if put { agent.put(url) } else { agent.post(url) };
        let resp = self
            .authed(req)
            .header("Content-Type", "application/octet-stream")
            .send(ureq::SendBody::from_reader(reader));
        self.decode(resp)
    }

    /// GET a raw body into `writer`; fails if the body ends short of its announced length.
    pub fn download(&self, path: &str, writer: &mut dyn std::io::Write) -> Result<u64, ApiError> {
        self.download_range(path, None, writer)
    }

    /// Like [`ApiClient::download`], with an HTTP `Range` (`bytes=START-END`) if given.
    pub fn download_range(
        &self,
        path: &str,
        range: Option<&str>,
        writer: &mut dyn std::io::Write,
    ) -> Result<u64, ApiError> {
        let mut req = self.authed(Self::transfer_agent().get(format!("{}{path}", self.base)));
        if let Some(r) = range {
            req = req.header("Range", r);
        }
        let resp = req.call();
        let mut resp = resp.map_err(|e| ApiError::Unreachable {
            addr: self.base.clone(),
            reason: e.to_string(),
        })?;
        if !resp.status().is_success() {
            return self.decode::<serde_json::Value>(Ok(resp)).map(|_| 0);
        }
        let expected = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let copied = std::io::copy(&mut resp.body_mut().as_reader(), writer).map_err(|e| {
            ApiError::Unreachable {
                addr: self.base.clone(),
                reason: format!("transfer interrupted: {e}"),
            }
        })?;
        if expected.is_some_and(|n| n != copied) {
            return Err(ApiError::Unreachable {
                addr: self.base.clone(),
                reason: format!("transfer ended after {copied} bytes (see the node's log)"),
            });
        }
        Ok(copied)
    }

    /// GET a JSON resource.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        let resp = self
            .authed(self.agent.get(format!("{}{path}", self.base)))
            .call();
        self.decode(resp)
    }

    /// POST a JSON body.
    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ApiError> {
        let resp = self
            .authed(self.agent.post(format!("{}{path}", self.base)))
            .send_json(body);
        self.decode(resp)
    }

    /// PUT a JSON body and decode the JSON answer.
    pub fn put_json_answer<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ApiError> {
        let resp = self
            .authed(self.agent.put(format!("{}{path}", self.base)))
            .send_json(body);
        self.decode(resp)
    }

    /// PUT a JSON body, ignoring the answer's content.
    pub fn put_json<B: Serialize>(&self, path: &str, body: &B) -> Result<(), ApiError> {
        let resp = self
            .authed(self.agent.put(format!("{}{path}", self.base)))
            .send_json(body);
        match resp {
            Ok(r) if r.status().is_success() => Ok(()),
            other => self.decode::<serde_json::Value>(other).map(|_| ()),
        }
    }

    /// POST with an empty body, ignoring the answer's content.
    pub fn post_empty(&self, path: &str) -> Result<(), ApiError> {
        let resp = self
            .authed(self.agent.post(format!("{}{path}", self.base)))
            .send_empty();
        match resp {
            Ok(r) if r.status().is_success() => Ok(()),
            other => self.decode::<serde_json::Value>(other).map(|_| ()),
        }
    }

    fn decode<T: DeserializeOwned>(
        &self,
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T, ApiError> {
        let mut resp = resp.map_err(|e| ApiError::Unreachable {
            addr: self.base.clone(),
            reason: e.to_string(),
        })?;
        let status = resp.status();
        if !status.is_success() {
            let message = resp
                .body_mut()
                .read_json::<ErrorBody>()
                .map(|b| b.error)
                .unwrap_or_else(|_| format!("HTTP {status}"));
            return Err(ApiError::Refused {
                status: status.as_u16(),
                message,
            });
        }
        resp.body_mut()
            .read_json::<T>()
            .map_err(|e| ApiError::Unreachable {
                addr: self.base.clone(),
                reason: format!("bad answer: {e}"),
            })
    }
}

/// Percent-encode `s` for a URL path of the API, keeping '/' between key segments.
pub fn path_escape(s: &str) -> String {
    url_escape(s, b'/')
}

/// Percent-encode `s` for a URL, keeping the unreserved characters and `keep`.
pub fn url_escape(s: &str, keep: u8) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b if b == keep => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
