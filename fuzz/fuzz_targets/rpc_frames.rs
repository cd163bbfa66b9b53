//! The `/deltafed/rpc/1` framing (node/src/net/codec.rs): a 4-byte big-endian length, then the
//! message, read from a stream as libp2p hands it over, then the message decoded as the node
//! does. First byte: bit 0 = 0 reads a request, 1 a response; bits 1-7 = the most bytes each
//! read returns (0: all at once).
#![no_main]

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use deltafed_fuzz::{ALLOWANCE, bounded, check_wire};
use deltafed_node::net::codec::{Codec, PROTOCOL};
use deltafed_protocol::wire::{MAX_RPC_REQUEST, MAX_RPC_RESPONSE};
use futures::executor::block_on;
use futures::io::{AsyncRead, Cursor};
use libfuzzer_sys::fuzz_target;
use libp2p::request_response::Codec as _;

/// A stream that returns at most `step` bytes per read, then end of stream.
struct Stream<'a> {
    data: &'a [u8],
    step: usize,
}

impl AsyncRead for Stream<'_> {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Poll::Ready(Ok(n))
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let response = selector & 1 == 1;
    let step = match usize::from(selector >> 1) {
        0 => usize::MAX,
        n => n,
    };
    let max = if response { MAX_RPC_RESPONSE } else { MAX_RPC_REQUEST };
    // Reading a frame allocates the length it announces, up to the limit, before the bytes
    // arrive: that is the bound here.
    bounded("rpc frame", bytes.len(), ALLOWANCE + max, || {
        let mut codec = Codec;
        let mut stream = Stream { data: bytes, step };
        let read = if response {
            block_on(codec.read_response(&PROTOCOL, &mut stream))
        } else {
            block_on(codec.read_request(&PROTOCOL, &mut stream))
        };
        let announced = bytes.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
        let frame = match (read, announced) {
            (Ok(frame), Some(len)) => {
                assert!(len <= max, "rpc frame: accepted a {len}-byte frame over the limit of {max}");
                assert_eq!(frame, bytes[4..4 + len], "rpc frame: the frame is not the bytes after its length");
                frame
            }
            (Ok(_), None) => panic!("rpc frame: a frame read from fewer than 4 bytes"),
            (Err(e), Some(len)) if len > max => {
                assert_eq!(e.kind(), io::ErrorKind::InvalidData, "rpc frame: an oversized frame refused with {e}");
                return;
            }
            (Err(e), _) => {
                assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "rpc frame: a short frame refused with {e}");
                return;
            }
        };
        // Writing it again gives back the same bytes.
        let mut out = Cursor::new(Vec::new());
        let written = if response {
            block_on(codec.write_response(&PROTOCOL, &mut out, frame.clone()))
        } else {
            block_on(codec.write_request(&PROTOCOL, &mut out, frame.clone()))
        };
        written.unwrap_or_else(|e| panic!("rpc frame: a frame that was read cannot be written: {e}"));
        assert_eq!(out.into_inner(), bytes[..4 + frame.len()], "rpc frame: writing it back changed the bytes");
        check_wire(if response { 2 } else { 1 }, &frame);
    });
});
