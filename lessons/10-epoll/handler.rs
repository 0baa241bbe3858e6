//! Lesson 10's application: the whole echo protocol as a handler the reactor calls, as the
//! talk's Ruby `module Handler`: post_init on connect, receive_data per read, unbind on the
//! end. Lesson 17 mounts it too: a restart does not change what is served.

use std::time::Duration;

use protocols::echo::{self, Echo};
use sockets_by_hand::ending::Ending;
use sockets_by_hand::say;

use crate::reactor::{Connection, Handler};
use crate::{mistake, Mistake};

#[derive(Default)]
pub struct EchoHandler {
    echo: Echo,
    replies: Vec<u8>,
}

impl Handler for EchoHandler {
    fn post_init(&mut self, conn: &mut Connection) {
        say!("client connected: {}", conn.peer);
        conn.send_data(echo::WELCOME);
    }

    fn receive_data(&mut self, conn: &mut Connection, data: &[u8]) {
        if mistake(Mistake::BlockingHandler) {
            // The mistake: a blocking call in a handler (a sleep here; a DNS lookup or a slow
            // disk in real life). The loop runs nothing else meanwhile: no client is served.
            std::thread::sleep(Duration::from_secs(1));
        }
        self.replies.clear(); // keeps its capacity: no allocation per line
        let status = self.echo.feed(data, &mut self.replies);
        conn.send_data(&self.replies);
        if !status.is_open() {
            conn.close_connection_after_writing(); // after `q` or a line too long
        }
    }

    fn unbind(&mut self, conn: &Connection) {
        let ending = match conn.error {
            Some((call, errno)) => Ending::Failed(call, errno),
            None => Ending::from_status(self.echo.status()).unwrap_or(Ending::Eof),
        };
        say!("client disconnected: {} ({ending})", conn.peer);
    }
}
