//! Length-prefixed messages on QUIC streams.

use serde::Serialize;
use serde::de::DeserializeOwned;
use weft_core::wire;

use crate::NetError;

/// Write one framed message.
pub async fn write_message<T: Serialize>(
    send: &mut quinn::SendStream,
    message: &T,
) -> Result<(), NetError> {
    let payload = wire::encode(message);
    send.write_all(&wire::frame(&payload))
        .await
        .map_err(|e| NetError::Stream(e.to_string()))
}

/// Read one framed message of at most `max` bytes.
pub async fn read_message<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    max: usize,
) -> Result<T, NetError> {
    let mut header = [0u8; 4];
    recv.read_exact(&mut header)
        .await
        .map_err(|e| NetError::Stream(e.to_string()))?;
    let len = wire::frame_len(header, max)?;
    let mut payload = vec![0u8; len];
    recv.read_exact(&mut payload)
        .await
        .map_err(|e| NetError::Stream(e.to_string()))?;
    Ok(wire::decode(&payload)?)
}
