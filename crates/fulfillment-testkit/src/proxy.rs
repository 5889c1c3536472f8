//! A TCP proxy in front of RabbitMQ that a test can cut and restore: the
//! broker "goes down" for one service without stopping the shared broker,
//! so such tests still run in parallel with the others.

use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

pub struct Proxy {
    pub port: u16,
    target: String,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Proxy {
    /// A proxy to `target` that is down until `up()`.
    pub fn down(target: &str) -> Proxy {
        Proxy {
            port: crate::service::free_port(),
            target: target.to_owned(),
            tasks: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub async fn up(&self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("proxy port still free");
        let target = self.target.clone();
        let tasks = self.tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                let pipe = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks.lock().unwrap().push(pipe.abort_handle());
            }
        });
        self.tasks.lock().unwrap().push(accept.abort_handle());
    }

    /// Stops listening and cuts every connection, like a broker that died.
    pub fn down_now(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.down_now();
    }
}
