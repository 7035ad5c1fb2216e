package dev.nbd.server;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

import dev.nbd.backend.ExportBackend;
import dev.nbd.protocol.NbdProtocol;
import dev.nbd.testsupport.NbdServerExtension;
import dev.nbd.testsupport.RawNbdClient;
import dev.nbd.testsupport.RawNbdClient.OptionReply;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

/**
 * Negotiation when the server cannot serve: a backend that cannot open a connection view, and
 * a server draining for shutdown.
 */
class NegotiationFailureTests {

	@RegisterExtension
	final NbdServerExtension servers = new NbdServerExtension();

	/**
	 * GO runs the backend's {@code connect()} before its ACK: when it fails the client gets
	 * NBD_REP_ERR_UNKNOWN and may go on negotiating (here: GO again, once the backend is back),
	 * instead of an ACK followed by a closed connection. A SINGLE export is not left claimed by
	 * the failed attempt.
	 */
	@Test
	void goIsRefusedWithAnErrorWhenTheBackendCannotConnect() throws Exception {
		TestBackend backend = new TestBackend("flaky");
		backend.refuseConnections = true;
		start(backend, Map.of("flaky", MultiConnMode.SINGLE));
		try (RawNbdClient first = negotiating(); RawNbdClient second = negotiating()) {
			List<OptionReply> replies = first.replies(NbdProtocol.OPT_GO, RawNbdClient.infoData("flaky"));
			assertThat(replies).extracting(OptionReply::type).containsExactly(NbdProtocol.REP_ERR_UNKNOWN);
			assertThat(new String(replies.get(0).data(), StandardCharsets.UTF_8)).contains("not available");
			assertThat(this.servers.listener().refusals()).containsExactly("backend_connect");
			backend.refuseConnections = false;
			// The failed GO did not keep the single-connection export: another client gets it.
			assertThat(second.go("flaky").size()).isEqualTo(TestBackend.SIZE);
			second.sendRequest(0, NbdProtocol.CMD_READ, 1, 0, 512, null);
			assertThat(second.readReply(512).error()).isZero();
		}
		backend.refuseConnections = true;
		try (RawNbdClient client = negotiating()) {
			// Still negotiating after the error: the same connection can try again.
			assertThat(client.replies(NbdProtocol.OPT_GO, RawNbdClient.infoData("flaky")))
				.extracting(OptionReply::type)
				.containsExactly(NbdProtocol.REP_ERR_UNKNOWN);
			backend.refuseConnections = false;
			assertThat(client.go("flaky")).isNotNull();
		}
	}

	/** EXPORT_NAME has no error reply: a backend that cannot connect closes the connection before any reply. */
	@Test
	void exportNameClosesWithoutAReplyWhenTheBackendCannotConnect() throws Exception {
		TestBackend backend = new TestBackend("flaky");
		backend.refuseConnections = true;
		start(backend, Map.of());
		try (RawNbdClient client = negotiating()) {
			client.sendOption(NbdProtocol.OPT_EXPORT_NAME, "flaky".getBytes(StandardCharsets.UTF_8));
			assertThat(client.closesWithoutData()).isTrue();
		}
		assertThat(this.servers.listener().refusals()).containsExactly("backend_connect");
	}

	/**
	 * Once the server drains for shutdown, negotiations still open get NBD_REP_ERR_SHUTDOWN for
	 * every option but ABORT and are closed; ABORT is still acknowledged; EXPORT_NAME is closed.
	 */
	@Test
	void optionsDuringTheShutdownDrainGetErrShutdownAndTheConnectionCloses() throws Exception {
		TestBackend backend = new TestBackend("gated");
		start(backend, Map.of());
		RawNbdClient attached = RawNbdClient.connect(this.servers.server().port(), "gated");
		RawNbdClient listing = negotiating();
		RawNbdClient going = negotiating();
		RawNbdClient exportName = negotiating();
		RawNbdClient aborting = negotiating();
		Thread stopper = null;
		try {
			// A write in flight keeps the server draining until the test lets it finish.
			attached.sendRequest(0, NbdProtocol.CMD_WRITE, 1, 0, 512, new byte[512]);
			assertThat(backend.writeStarted.await(10, TimeUnit.SECONDS)).isTrue();
			stopper = new Thread(() -> this.servers.server().shutdownGracefully(Duration.ofSeconds(30)));
			stopper.start();
			await().atMost(Duration.ofMinutes(1)).pollInterval(Duration.ofMillis(1)).until(this.servers.server()::isDraining);
			assertThat(listing.replies(NbdProtocol.OPT_LIST, new byte[0])).extracting(OptionReply::type)
				.containsExactly(NbdProtocol.REP_ERR_SHUTDOWN);
			assertThat(listing.closedByServer(5000)).isTrue();
			assertThat(going.replies(NbdProtocol.OPT_GO, RawNbdClient.infoData("gated"))).extracting(OptionReply::type)
				.containsExactly(NbdProtocol.REP_ERR_SHUTDOWN);
			assertThat(going.closedByServer(5000)).isTrue();
			exportName.sendOption(NbdProtocol.OPT_EXPORT_NAME, "gated".getBytes(StandardCharsets.UTF_8));
			assertThat(exportName.closesWithoutData()).isTrue();
			assertThat(aborting.replies(NbdProtocol.OPT_ABORT, new byte[0])).extracting(OptionReply::type)
				.containsExactly(NbdProtocol.REP_ACK);
			assertThat(this.servers.listener().refusals("shutting_down")).isEqualTo(3);
			// The request in flight is still answered.
			backend.releaseWrite.countDown();
			assertThat(attached.readSimpleReply().error()).isZero();
			stopper.join(30_000);
			assertThat(stopper.isAlive()).isFalse();
		}
		finally {
			backend.releaseWrite.countDown();
			for (RawNbdClient c : List.of(attached, listing, going, exportName, aborting)) {
				c.close();
			}
			if (stopper != null) {
				stopper.join(30_000);
			}
		}
	}

	private void start(ExportBackend backend, Map<String, MultiConnMode> modes) {
		this.servers.start(NbdServerConfig.builder(), List.of(backend), modes, Map.of());
	}

	private RawNbdClient negotiating() throws IOException {
		RawNbdClient client = RawNbdClient.connect(this.servers.server().port());
		client.handshake();
		return client;
	}

	/** Reads zeroes; its writes wait for {@link #releaseWrite}; {@code connect()} fails while asked to. */
	private static final class TestBackend implements ExportBackend {

		static final long SIZE = 1 << 20;

		private final String name;

		private final CountDownLatch writeStarted = new CountDownLatch(1);

		private final CountDownLatch releaseWrite = new CountDownLatch(1);

		private volatile boolean refuseConnections;

		TestBackend(String name) {
			this.name = name;
		}

		@Override
		public String name() {
			return this.name;
		}

		@Override
		public long size() {
			return SIZE;
		}

		@Override
		public ExportBackend connect() throws IOException {
			if (this.refuseConnections) {
				throw new IOException("storage offline");
			}
			return this;
		}

		@Override
		public void read(long offset, ByteBuffer dst) {
			while (dst.hasRemaining()) {
				dst.put((byte) 0);
			}
		}

		@Override
		public void write(long offset, ByteBuffer src, boolean fua) {
			this.writeStarted.countDown();
			try {
				this.releaseWrite.await(30, TimeUnit.SECONDS);
			}
			catch (InterruptedException ex) {
				Thread.currentThread().interrupt();
			}
			src.position(src.limit());
		}

	}

}
