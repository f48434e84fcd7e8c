//! Forwarding a question to the upstream resolvers: over UDP, each
//! resolver in turn with a timeout, and again over TCP when the UDP answer
//! is truncated. The answer's ID and question must match what was sent.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, Query};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::time::{timeout_at, Instant};

use super::NamesError;

/// Questions forwarded at once; beyond this they get SERVFAIL at once.
pub const MAX_IN_FLIGHT: usize = 256;
/// How long one upstream resolver may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// The UDP payload we advertise upstream (the DNS flag day's size).
const UDP_PAYLOAD: u16 = 1232;

/// The upstream resolvers and the cap on questions in flight.
#[derive(Clone, Debug)]
pub struct Upstream {
    servers: Vec<SocketAddr>,
    timeout: Duration,
    slots: Arc<Semaphore>,
}

impl Upstream {
    /// Ask `servers` in order, each for at most `timeout`.
    pub fn new(servers: Vec<SocketAddr>, timeout: Duration) -> Upstream {
        Upstream {
            servers,
            timeout,
            slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    /// The resolvers, in the order they are asked.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// The answer of the first resolver that answers `query` (recursion
    /// desired, checking disabled as the asker said).
    pub async fn forward(
        &self,
        query: &Query,
        checking_disabled: bool,
    ) -> Result<Message, NamesError> {
        if self.servers.is_empty() {
            return Err(NamesError::NoUpstream);
        }
        let _slot = self.slots.try_acquire().map_err(|_| NamesError::Busy {
            limit: MAX_IN_FLIGHT,
        })?;
        let mut request = Message::query();
        request.metadata.recursion_desired = true;
        request.metadata.checking_disabled = checking_disabled;
        request.add_query(query.clone());
        let mut edns = Edns::new();
        edns.set_max_payload(UDP_PAYLOAD);
        request.set_edns(edns);
        let bytes = request.to_vec().map_err(|e| self.failed(e.to_string()))?;
        let mut reason = String::new();
        for server in &self.servers {
            match self.ask(*server, &request, &bytes).await {
                Ok(answer) => return Ok(answer),
                Err(e) => reason = format!("{server}: {e}"),
            }
        }
        Err(self.failed(reason))
    }

    fn failed(&self, reason: String) -> NamesError {
        let servers: Vec<String> = self.servers.iter().map(|s| s.to_string()).collect();
        NamesError::Upstream {
            servers: servers.join(", "),
            reason,
        }
    }

    /// One resolver: UDP, then TCP if the answer is truncated.
    async fn ask(
        &self,
        server: SocketAddr,
        request: &Message,
        bytes: &[u8],
    ) -> Result<Message, String> {
        let deadline = Instant::now() + self.timeout;
        let local: SocketAddr = match server {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(local).await.map_err(|e| e.to_string())?;
        socket.connect(server).await.map_err(|e| e.to_string())?;
        socket.send(bytes).await.map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 65_535];
        let answer = loop {
            let n = timeout_at(deadline, socket.recv(&mut buf))
                .await
                .map_err(|_| format!("no answer within {:?}", self.timeout))?
                .map_err(|e| e.to_string())?;
            // Anything else on this socket (a late or forged datagram) is ignored.
            if let Some(answer) = Message::from_vec(&buf[..n])
                .ok()
                .filter(|m| answers(request, m))
            {
                break answer;
            }
        };
        if !answer.metadata.truncation {
            return Ok(answer);
        }
        timeout_at(deadline, ask_tcp(server, request, bytes))
            .await
            .map_err(|_| format!("no answer over TCP within {:?}", self.timeout))?
    }
}

/// Whether `answer` answers `request`: a response with its ID and question.
fn answers(request: &Message, answer: &Message) -> bool {
    answer.metadata.message_type == MessageType::Response
        && answer.metadata.id == request.metadata.id
        && answer.queries == request.queries
}

/// The question over TCP (two-byte length, then the message).
async fn ask_tcp(server: SocketAddr, request: &Message, bytes: &[u8]) -> Result<Message, String> {
    let mut stream = TcpStream::connect(server)
        .await
        .map_err(|e| format!("TCP: {e}"))?;
    let len = u16::try_from(bytes.len()).map_err(|_| "question too long".to_string())?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(bytes);
    stream
        .write_all(&framed)
        .await
        .map_err(|e| format!("TCP: {e}"))?;
    let len = stream.read_u16().await.map_err(|e| format!("TCP: {e}"))?;
    let mut buf = vec![0u8; usize::from(len)];
    stream
        .read_exact(&mut buf)
        .await
        .map_err(|e| format!("TCP: {e}"))?;
    let answer = Message::from_vec(&buf).map_err(|e| format!("TCP answer: {e}"))?;
    if answers(request, &answer) {
        Ok(answer)
    } else {
        Err("TCP answer does not match the question".into())
    }
}
