//! Request/response protocols: one question and one answer per stream, both postcard frames
//! with their own size limits, the whole exchange under one deadline. Every such protocol of
//! every service is an [`Rpc`]; protocols that stream bulk bytes (shard transfers) frame their
//! control messages with [`crate::read_message`]/[`crate::write_message`] and stream the rest.

use std::future::Future;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use weft_core::NodeId;

use crate::endpoint::{Endpoint, NetError, Peer};
use crate::framing::{read_message, write_message};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The peer could not be reached, or the stream or a frame failed.
    #[error(transparent)]
    Net(#[from] NetError),
    /// No answer within the protocol's deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// A request/response protocol: its number, frame limits and deadline.
pub struct Rpc<Q, A> {
    protocol: u16,
    max_question: usize,
    max_answer: usize,
    deadline: Duration,
    _types: PhantomData<fn(Q) -> A>,
}

impl<Q, A> Clone for Rpc<Q, A> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<Q, A> Copy for Rpc<Q, A> {}

impl<Q, A> Rpc<Q, A>
where
    Q: Serialize + DeserializeOwned + Send + Sync + 'static,
    A: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// A protocol numbered `protocol` (see `weft_core::proto`) whose questions and answers are
    /// at most `max_question` and `max_answer` bytes, answered within `deadline`.
    pub const fn new(
        protocol: u16,
        max_question: usize,
        max_answer: usize,
        deadline: Duration,
    ) -> Rpc<Q, A> {
        Rpc {
            protocol,
            max_question,
            max_answer,
            deadline,
            _types: PhantomData,
        }
    }

    /// The protocol number.
    pub fn protocol(&self) -> u16 {
        self.protocol
    }

    /// Ask `node` (reached at `addr`) and wait for its answer.
    pub async fn call(
        &self,
        endpoint: &Endpoint,
        node: NodeId,
        addr: SocketAddr,
        question: &Q,
    ) -> Result<A, RpcError> {
        let exchange = async {
            let (mut send, mut recv) = endpoint.open(node, addr, self.protocol).await?;
            self.exchange(&mut send, &mut recv, question).await
        };
        tokio::time::timeout(self.deadline, exchange)
            .await
            .map_err(|_| RpcError::Timeout(self.deadline))?
    }

    /// Ask over an already opened stream (e.g. one a guest opened on a bootstrap
    /// connection).
    pub async fn call_on(
        &self,
        send: &mut quinn::SendStream,
        recv: &mut quinn::RecvStream,
        question: &Q,
    ) -> Result<A, RpcError> {
        tokio::time::timeout(self.deadline, self.exchange(send, recv, question))
            .await
            .map_err(|_| RpcError::Timeout(self.deadline))?
    }

    async fn exchange(
        &self,
        send: &mut quinn::SendStream,
        recv: &mut quinn::RecvStream,
        question: &Q,
    ) -> Result<A, RpcError> {
        write_message(send, question).await?;
        let _ = send.finish();
        Ok(read_message::<A>(recv, self.max_answer).await?)
    }

    /// Answer this protocol's streams with `answer` (`guests`: also from nodes without a
    /// membership certificate). A question that does not arrive, decode or fit in time ends the
    /// stream; the handler never sees it.
    pub fn serve<F, Fut>(&self, endpoint: &Endpoint, guests: bool, answer: F)
    where
        F: Fn(Peer, Q) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = A> + Send + 'static,
    {
        let answer = Arc::new(answer);
        self.serve_or_close(endpoint, guests, move |peer, q| {
            let answer = answer.clone();
            async move { Some(answer(peer, q).await) }
        });
    }

    /// Like [`Rpc::serve`], but the handler may decline to answer (`None`): the stream is then
    /// closed without one.
    pub fn serve_or_close<F, Fut>(&self, endpoint: &Endpoint, guests: bool, answer: F)
    where
        F: Fn(Peer, Q) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Option<A>> + Send + 'static,
    {
        let rpc = *self;
        let answer = Arc::new(answer);
        endpoint.register_stream(
            self.protocol,
            guests,
            Arc::new(move |peer: Peer, mut send, mut recv| {
                let answer = answer.clone();
                Box::pin(async move {
                    let serve = async {
                        let question: Q = read_message(&mut recv, rpc.max_question).await?;
                        let Some(reply) = answer(peer.clone(), question).await else {
                            return Ok(());
                        };
                        write_message(&mut send, &reply).await?;
                        let _ = send.finish();
                        // Until the asker has it: a guest's connection may close right after.
                        let _ = send.stopped().await;
                        Ok::<_, NetError>(())
                    };
                    match tokio::time::timeout(rpc.deadline, serve).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            tracing::debug!(protocol = rpc.protocol, ?peer, error = %e, "request failed")
                        }
                        Err(_) => {
                            tracing::debug!(protocol = rpc.protocol, ?peer, "request timed out")
                        }
                    }
                })
            }),
        );
    }
}
