//! The replica side: a request this node takes for a model it holds — checked again whoever
//! sent it (its size, that the model is here, that this node is where it may run), queued
//! (at most `queue` per model, one running at a time), computed on a blocking thread and
//! streamed back frame by frame. A caller that goes away stops the generation at the next
//! token.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};
use weft_core::NodeId;
use weft_net::{Peer, read_message, write_message};

use crate::wire::MAX_REQUEST;
use crate::{
    ADMIT_WITHIN, ChatRole, Engine, Finish, Frame, InferenceService, MAX_INPUTS, Params, Refusal,
    Request, Slots, Work,
};

impl InferenceService {
    /// Take `request` into this node's queue for its model: its frames (admitted or busy or
    /// refused first). Dropping the receiver cancels it.
    pub(crate) fn serve_here(&self, asker: NodeId, request: &Request) -> mpsc::Receiver<Frame> {
        let inner = &self.inner;
        let (tx, rx) = mpsc::channel(64);
        let refuse = |why, message: String| {
            let _ = tx.try_send(Frame::Refused { why, message });
        };
        if let Work::Embed { inputs } = &request.work
            && (inputs.is_empty() || inputs.len() > MAX_INPUTS)
        {
            let _ = tx.try_send(Frame::Failed {
                invalid: true,
                message: format!(
                    "{} inputs; an embeddings request holds 1 to {MAX_INPUTS}",
                    inputs.len()
                ),
            });
            return rx;
        }
        let Some(engine) = inner.holder.engine(&request.model) else {
            refuse(
                Refusal::NotHere,
                format!("this node does not hold `{}` loaded", request.model),
            );
            return rx;
        };
        let placement = inner.fabric.member(&inner.me).map(|m| m.placement);
        let here = placement
            .as_ref()
            .is_some_and(|p| request.allowed.admits(&p.region, &p.jurisdiction));
        if !here {
            refuse(
                Refusal::NotAllowed,
                "this node is not where the request may run".into(),
            );
            return rx;
        }
        let capacity = inner.queue.load(Ordering::Relaxed);
        let slots = inner
            .slots
            .lock()
            .entry(request.model.clone())
            .or_insert_with(|| {
                Arc::new(Slots {
                    taken: AtomicU32::new(0),
                    run: Semaphore::new(1),
                })
            })
            .clone();
        let taken = slots
            .taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                (t < capacity).then_some(t + 1)
            });
        let Ok(before) = taken else {
            inner.busy.fetch_add(1, Ordering::Relaxed);
            let per = inner.service_time(&request.model);
            let retry_after = ((per * capacity as f64 / 1000.0).ceil() as u32).clamp(1, 60);
            let _ = tx.try_send(Frame::Busy { retry_after });
            return rx;
        };
        inner.served.fetch_add(1, Ordering::Relaxed);
        let _ = tx.try_send(Frame::Admitted {
            queued: before,
            capacity,
        });
        let work = request.work.clone();
        let me = self.clone();
        let model = request.model.clone();
        let account = request.account;
        self.inner.tasks.spawn(async move {
            let release = Release(slots.clone());
            let Ok(_permit) = slots.run.acquire().await else {
                return;
            };
            if tx.is_closed() {
                return; // the caller left while it waited
            }
            let started = Instant::now();
            let sink = tx.clone();
            let end = tokio::task::spawn_blocking(move || compute(&engine, work, &sink))
                .await
                .unwrap_or_else(|e| Frame::Failed {
                    invalid: false,
                    message: format!("the engine failed: {e}"),
                });
            me.inner.note_service(&model, started.elapsed());
            me.receipt(asker, account, &model, &end);
            let _ = tx.send(end).await;
            drop(release);
        });
        rx
    }

    /// A stream from another node: its request, answered frame by frame.
    pub(crate) async fn answer_peer(
        &self,
        peer: Peer,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
    ) {
        let Peer::Member(member) = peer else { return };
        let peer_id = member.id;
        let Ok(Ok(request)) = tokio::time::timeout(
            ADMIT_WITHIN,
            read_message::<Request>(&mut recv, MAX_REQUEST),
        )
        .await
        else {
            return;
        };
        let mut rx = self.serve_here(peer_id, &request);
        loop {
            tokio::select! {
                frame = rx.recv() => {
                    let Some(frame) = frame else { break };
                    let end = !matches!(frame, Frame::Admitted { .. } | Frame::Piece(_));
                    if write_message(&mut send, &frame).await.is_err() {
                        break; // the entry went away: dropping rx cancels the work
                    }
                    if end {
                        let _ = send.finish();
                        let _ = tokio::time::timeout(Duration::from_secs(5), send.stopped()).await;
                        break;
                    }
                }
                _ = send.stopped() => break,
            }
        }
    }
}

/// Gives a queue slot back when dropped.
struct Release(Arc<Slots>);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.taken.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Run `work` on `engine` (on a blocking thread), sending pieces of text to `sink`; returns the
/// last frame.
fn compute(engine: &Engine, work: Work, sink: &mpsc::Sender<Frame>) -> Frame {
    let failed = |e: weft_infer::Error| match e {
        weft_infer::Error::ContextLength { prompt, context } => Frame::TooLong {
            prompt_tokens: prompt as u32,
            context: context as u32,
        },
        weft_infer::Error::Invalid(message) => Frame::Failed {
            invalid: true,
            message,
        },
        other => Frame::Failed {
            invalid: false,
            message: other.to_string(),
        },
    };
    let wrong = |what: &str| Frame::Failed {
        invalid: true,
        message: format!("this model does not do {what}"),
    };
    let on_piece = |piece: &str| {
        if sink.blocking_send(Frame::Piece(piece.to_string())).is_ok() {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(())
        }
    };
    match (engine, work) {
        (Engine::Embeddings(e), Work::Embed { inputs }) => {
            let texts: Vec<&str> = inputs.iter().map(String::as_str).collect();
            match e.embed(&texts) {
                Ok(out) => Frame::Embedded {
                    tokens: out.total_tokens() as u32,
                    vectors: out.vectors,
                },
                Err(e) => failed(e),
            }
        }
        (Engine::Chat(m), Work::Chat { messages, params }) => {
            let mut model = m.lock();
            let params = generate_params(&params, model.context_length());
            let messages: Vec<weft_infer::Message> = messages
                .into_iter()
                .map(|(role, text)| {
                    let role = match role {
                        ChatRole::System => weft_infer::Role::System,
                        ChatRole::User => weft_infer::Role::User,
                        ChatRole::Assistant => weft_infer::Role::Assistant,
                    };
                    weft_infer::Message::new(role, text)
                })
                .collect();
            match model.chat_stream(&messages, &params, on_piece) {
                Ok(g) => done(&g),
                Err(e) => failed(e),
            }
        }
        (Engine::Chat(m), Work::Complete { prompt, params }) => {
            let mut model = m.lock();
            let params = generate_params(&params, model.context_length());
            match model.complete_stream(&prompt, &params, on_piece) {
                Ok(g) => done(&g),
                Err(e) => failed(e),
            }
        }
        (Engine::Embeddings(_), _) => wrong("text generation"),
        (Engine::Chat(_), _) => wrong("embeddings"),
    }
}

fn generate_params(p: &Params, context: usize) -> weft_infer::GenerateParams {
    weft_infer::GenerateParams {
        max_tokens: p.max_tokens.map_or(context, |n| n as usize),
        temperature: p.temperature,
        top_p: p.top_p,
        stop: p.stop.clone(),
        seed: p.seed,
    }
}

fn done(g: &weft_infer::Generation) -> Frame {
    Frame::Done {
        finish: match g.finish {
            weft_infer::FinishReason::Stop => Finish::Stop,
            weft_infer::FinishReason::Length => Finish::Length,
            weft_infer::FinishReason::Cancelled => Finish::Cancelled,
        },
        prompt_tokens: g.prompt_tokens as u32,
        completion_tokens: g.completion_tokens as u32,
    }
}

impl InferenceService {
    /// Sign the receipt for a request answered here (`asker` is the node it came through). It
    /// names who asked and how many tokens, never the prompt: the request it answers is hashed
    /// as asker, account, model and time.
    fn receipt(&self, asker: NodeId, account: NodeId, model: &str, end: &Frame) {
        let (tokens_in, tokens_out) = match end {
            Frame::Done {
                prompt_tokens,
                completion_tokens,
                ..
            } => (u64::from(*prompt_tokens), u64::from(*completion_tokens)),
            Frame::Embedded { tokens, .. } => (u64::from(*tokens), 0),
            _ => return,
        };
        let request = weft_core::ContentHash::of(&weft_core::wire::encode(&(
            asker,
            account,
            model,
            weft_net::now_ms(),
        )));
        let work = weft_ledger::Work::Inference {
            model: model.to_string(),
            tokens_in,
            tokens_out,
        };
        if let Err(e) = self.inner.ledger.issue(account, request, work) {
            tracing::warn!(%model, error = %e, "cannot sign the receipt of a request");
        }
    }
}
