package dev.nbd.server;

import java.nio.file.Path;
import java.time.Duration;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.io.TempDir;

import dev.nbd.backend.FileBackend;
import dev.nbd.protocol.NbdProtocol;
import dev.nbd.testsupport.NbdServerExtension;
import dev.nbd.testsupport.RawNbdClient;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

/** A READ served by sendfile counts as answered only once its bytes are in the socket. */
class SendfileAccountingTests {

	private static final int LENGTH = 16 << 20;

	@TempDir
	Path dir;

	private FileBackend file;

	@RegisterExtension
	final NbdServerExtension servers = new NbdServerExtension();

	private NbdServer server;

	@BeforeEach
	void start() throws Exception {
		this.file = this.servers.closeAfter(new FileBackend("file", this.dir.resolve("disk.img"), 32 << 20, null, false, true));
		this.server = this.servers.start(this.file);
	}

	@Test
	void largeReadStaysInFlightUntilItsBytesAreSent() throws Exception {
		try (RawNbdClient client = RawNbdClient.connect(this.server.port(), 64 * 1024)) {
			client.handshake();
			client.go("file");
			client.sendRequest(0, NbdProtocol.CMD_READ, 1, 0, LENGTH, null);
			NbdConnection connection = await().atMost(Duration.ofSeconds(30))
				.until(() -> this.server.connections().stream().filter(c -> c.requests() == 1).findFirst().orElse(null),
						c -> c != null);
			// Once a task queued behind it on the connection's loop has run, the request was started.
			connection.channel().eventLoop().submit(() -> {
			}).syncUninterruptibly();
			// 16 MiB cannot fit the socket buffers of a client that reads nothing: still in flight.
			assertThat(connection.inFlight()).isEqualTo(1);
			byte[] reply = new byte[16 + LENGTH];
			client.readFully(reply);
			await().atMost(Duration.ofSeconds(30)).until(() -> connection.inFlight() == 0);
		}
	}

}
