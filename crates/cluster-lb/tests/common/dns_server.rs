//! A real DNS server on 127.0.0.1 whose records the test changes while the balancer resolves
//! through it: hickory-server's in-memory zone behind its UDP server, as an orchestrator's DNS
//! answers for its replicas.
#![allow(dead_code)] // each test file uses a different subset

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use hickory_server::proto::rr::rdata::{A, SOA};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordSet, RecordType, RrKey};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
use hickory_server::Server;
use tokio::net::UdpSocket;

/// The zone every test name lives in.
const ZONE: &str = "cluster.test.";

/// A minute, for answers and for the absence of one: a balancer that cached them would miss
/// every change these tests make.
const TTL: u32 = 60;

pub struct DnsServer {
    pub addr: SocketAddr,
    zone: Arc<InMemoryZoneHandler>,
    server: Option<Server<Catalog>>,
}

impl DnsServer {
    pub async fn start() -> DnsServer {
        let origin = Name::from_ascii(ZONE).expect("zone name");
        let mut zone =
            InMemoryZoneHandler::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny);
        let soa = SOA::new(
            Name::from_ascii(format!("ns.{ZONE}")).expect("name"),
            Name::from_ascii(format!("admin.{ZONE}")).expect("name"),
            1,
            60,
            60,
            60,
            TTL,
        );
        assert!(zone.upsert_mut(Record::from_rdata(origin.clone(), TTL, RData::SOA(soa)), 1));
        let zone = Arc::new(zone);
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::new(&origin), vec![zone.clone()]);

        let socket = UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind the DNS server");
        let addr = socket.local_addr().expect("local address");
        let mut server = Server::new(catalog);
        server.register_socket(socket);
        DnsServer {
            addr,
            zone,
            server: Some(server),
        }
    }

    /// `host` within the test zone, as the balancer is told to resolve it.
    pub fn name(host: &str) -> String {
        format!("{host}.{ZONE}")
    }

    /// Makes `host` resolve to exactly `addresses` (none: the name no longer exists).
    pub async fn set(&self, host: &str, addresses: &[Ipv4Addr]) {
        let name = Name::from_ascii(DnsServer::name(host)).expect("host name");
        let key = RrKey::new(LowerName::new(&name), RecordType::A);
        let mut records = self.zone.records_mut().await;
        if addresses.is_empty() {
            records.remove(&key);
            return;
        }
        let mut set = RecordSet::with_ttl(name, RecordType::A, TTL);
        for address in addresses {
            set.new_record(&RData::A(A(*address)));
        }
        records.insert(key, Arc::new(set));
    }

    /// Stops answering: queries to its port go unanswered from now on.
    pub async fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.shutdown_gracefully().await;
        }
    }
}
