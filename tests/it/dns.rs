//! A DNS server on loopback (hickory-server) serving the whole `test.` zone, for tests that
//! resolve names. Nothing ever leaves 127.0.0.1.

use hickory_server::proto::rr::rdata::{A, MX, SOA, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// Records: (name, type, value). Types: A, MX ("pref host"), TXT.
pub async fn start_dns(records: &[(&str, &str, &str)]) -> SocketAddr {
    let origin = Name::from_str("test.").unwrap();
    let mut zone = InMemoryZoneHandler::<hickory_server::net::runtime::TokioRuntimeProvider>::empty(
        origin.clone(),
        ZoneType::Primary,
        AxfrPolicy::Deny,
    );
    let ns = Name::from_str("ns.test.").unwrap();
    let soa = SOA::new(
        ns.clone(),
        Name::from_str("admin.test.").unwrap(),
        1,
        3600,
        600,
        86400,
        60,
    );
    zone.upsert_mut(Record::from_rdata(origin.clone(), 300, RData::SOA(soa)), 1);
    for (name, kind, value) in records {
        let n = Name::from_str(name).unwrap();
        let rdata = match *kind {
            "A" => RData::A(A(value.parse().unwrap())),
            "MX" => {
                let (pref, host) = value.split_once(' ').unwrap();
                RData::MX(MX::new(pref.parse().unwrap(), Name::from_str(host).unwrap()))
            }
            "TXT" => RData::TXT(TXT::new(vec![value.to_string()])),
            other => panic!("record type {other}"),
        };
        zone.upsert_mut(Record::from_rdata(n, 300, rdata), 1);
    }
    let mut catalog = Catalog::new();
    catalog.upsert(LowerName::new(&origin), vec![Arc::new(zone)]);
    // UDP and TCP on one port number: the UDP port is free, the same TCP port may not be
    // (another test's connection can hold it), so try again on another.
    let (udp, tcp) = 'bound: {
        for _ in 0..50 {
            let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            if let Ok(tcp) = tokio::net::TcpListener::bind(udp.local_addr().unwrap()).await {
                break 'bound (udp, tcp);
            }
        }
        panic!("no port free for both UDP and TCP on 127.0.0.1");
    };
    let addr = udp.local_addr().unwrap();
    let mut server = hickory_server::Server::new(catalog);
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5), 4096);
    // The server runs on its own tasks for the rest of the test process.
    std::mem::forget(server);
    addr
}
