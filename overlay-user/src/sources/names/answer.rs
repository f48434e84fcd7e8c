//! One request's reply: the verdict of the table ([`super::table`]) turned
//! into a DNS response header and records, or the upstream resolvers'
//! answer; cut to the asker's UDP size (TC set) when it does not fit.

use hickory_proto::op::{Edns, Message, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{Name, RData, Record};
use hickory_server::net::xfer::Protocol;
use hickory_server::server::Request;

use super::table::{NameTable, Verdict};
use super::upstream::Upstream;

/// The largest UDP payload we answer with, whatever the asker advertises.
pub const MAX_UDP_PAYLOAD: u16 = 4096;

/// A reply: the header and the three record sections.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The response header (ID, flags, response code).
    pub metadata: Metadata,
    /// The answer section.
    pub answers: Vec<Record>,
    /// The authority section.
    pub authorities: Vec<Record>,
    /// The additional section (without EDNS, which the server adds).
    pub additionals: Vec<Record>,
}

impl Reply {
    /// A reply without records.
    fn code(request: &Request, code: ResponseCode) -> Reply {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = true;
        metadata.response_code = code;
        Reply {
            metadata,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
        }
    }
}

/// The EDNS of the response: present when the request had it, with our
/// payload size (at most [`MAX_UDP_PAYLOAD`], at least 512).
pub fn response_edns(request: &Request) -> Option<Edns> {
    request.edns.as_ref().map(|req| {
        let mut edns = Edns::new();
        edns.set_max_payload(req.max_payload().clamp(512, MAX_UDP_PAYLOAD));
        edns
    })
}

/// The reply to `request`, from `table` or, for names outside the overlay,
/// from `upstream`; `ttl` for the overlay's own records.
pub async fn reply(table: &NameTable, upstream: &Upstream, ttl: u32, request: &Request) -> Reply {
    if request.metadata.op_code != OpCode::Query {
        return Reply::code(request, ResponseCode::NotImp);
    }
    let [query] = request.queries.queries() else {
        return Reply::code(request, ResponseCode::FormErr);
    };
    let asked = query.original().name().clone();
    let verdict = table.decide(request.src().ip(), &asked.to_ascii(), query.query_type());
    let mut reply = match verdict {
        Verdict::Refused => return Reply::code(request, ResponseCode::Refused),
        Verdict::NxDomain => Reply::code(request, ResponseCode::NXDomain),
        Verdict::Addresses(ips) => {
            let mut r = Reply::code(request, ResponseCode::NoError);
            r.answers = ips
                .into_iter()
                .map(|ip| Record::from_rdata(asked.clone(), ttl, RData::A(A(ip))))
                .collect();
            r
        }
        Verdict::Pointer(target) => {
            let mut r = Reply::code(request, ResponseCode::NoError);
            if let Ok(name) = Name::from_ascii(format!("{target}.")) {
                r.answers = vec![Record::from_rdata(asked, ttl, RData::PTR(PTR(name)))];
            }
            r
        }
        Verdict::Forward => {
            return match upstream
                .forward(query.original(), request.metadata.checking_disabled)
                .await
            {
                Ok(answer) => fit(request, forwarded(request, answer)),
                Err(e) => {
                    log::debug!("dns: {} for {asked}: {e}", request.src().ip());
                    Reply::code(request, ResponseCode::ServFail)
                }
            };
        }
    };
    reply.metadata.authoritative = true;
    fit(request, reply)
}

/// The upstream answer as our reply to `request`: its code and records,
/// our ID and flags.
fn forwarded(request: &Request, answer: Message) -> Reply {
    let mut reply = Reply::code(request, answer.metadata.response_code);
    reply.metadata.recursion_available = answer.metadata.recursion_available;
    reply.answers = answer.answers;
    reply.authorities = answer.authorities;
    reply.additionals = answer.additionals;
    reply
}

/// Over UDP, a reply larger than the asker takes (512 bytes, or its EDNS
/// size) loses its records and gets TC, so that the asker retries over TCP.
fn fit(request: &Request, mut reply: Reply) -> Reply {
    if request.protocol() != Protocol::Udp {
        return reply;
    }
    let edns = response_edns(request);
    let limit = edns.as_ref().map_or(512, |e| e.max_payload());
    let mut message = Message::new(
        reply.metadata.id,
        reply.metadata.message_type,
        reply.metadata.op_code,
    );
    message.metadata = reply.metadata;
    message.queries = request
        .queries
        .queries()
        .iter()
        .map(|q| q.original().clone())
        .collect();
    message.answers = reply.answers.clone();
    message.authorities = reply.authorities.clone();
    message.additionals = reply.additionals.clone();
    message.edns = edns;
    let fits = message
        .to_vec()
        .is_ok_and(|bytes| bytes.len() <= usize::from(limit));
    if !fits {
        reply.metadata.truncation = true;
        reply.answers.clear();
        reply.authorities.clear();
        reply.additionals.clear();
    }
    reply
}
