use std::time::Duration;
use eventgate_test_support::private_stack;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

async fn send(p: &FutureProducer, topic: &str, n: usize) -> String {
    match p.send(FutureRecord::to(topic).key("k").payload(&format!("m{n}")), Duration::from_millis(1500)).await {
        Ok(d) => format!("ok {:?}", (d.partition, d.offset)),
        Err((e, _)) => format!("err {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn experiment() {
    let stack = private_stack().await;
    let topic = "exp.topic";
    stack.create_kafka_topic(topic, 2).await;
    let idem = std::env::var("IDEM").unwrap_or("true".into());
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &stack.kafka_brokers)
        .set("enable.idempotence", &idem)
        .set("acks", "all")
        .set("message.timeout.ms", "1500")
        .set("debug", "eos,msg,topic,metadata,protocol")
        .create().unwrap();
    eprintln!("A {}", send(&p, topic, 1).await);
    tokio::task::block_in_place(|| stack.stop_broker());
    eprintln!("B {}", send(&p, topic, 2).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::block_in_place(|| stack.start_broker());
    stack.create_kafka_topic(topic, 2).await;
    for i in 0..15 {
        eprintln!("C{i} {}", send(&p, topic, 3).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
