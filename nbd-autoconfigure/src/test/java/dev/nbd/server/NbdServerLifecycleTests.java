package dev.nbd.server;

import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.io.TempDir;

import dev.nbd.backend.MemoryBackend;
import dev.nbd.testsupport.GatedBackend;
import dev.nbd.testsupport.NbdServerExtension;
import dev.nbd.testsupport.RawNbdClient;
import io.netty.channel.EventLoopGroup;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.awaitility.Awaitility.await;

/**
 * {@link NbdServer}'s own part of the listener's life, event by event (a {@link GatedBackend} holds
 * the drain open as long as a test needs): the listeners close as the drain begins, a server
 * stopped gracefully starts again and answers as before, a request that finishes after the final
 * flush began is not answered, a stop (or a failed start) ends the event loops, a connection
 * refused or closed gives its place under {@code max-connections} back, and the server's
 * {@code allowed-addresses} let in the addresses they list.
 */
class NbdServerLifecycleTests {

	/** Upper bound for anything here; a loaded machine stays far below it. */
	private static final Duration PATIENCE = Duration.ofSeconds(60);

	@RegisterExtension
	final NbdServerExtension servers = new NbdServerExtension();

	@TempDir
	Path dir;

	/**
	 * The Unix socket closes (its file goes) when the drain begins, not when the server stops:
	 * a request held in the backend keeps the drain open meanwhile.
	 */
	@Test
	void theUnixSocketClosesWhenTheDrainBegins() throws Exception {
		GatedBackend gated = new GatedBackend("gated", 1 << 20);
		Path socket = this.dir.resolve("nbd.sock");
		NbdServer server = this.servers.start(NbdServerConfig.builder().unixSocket(socket), gated);
		assertThat(Files.exists(socket)).isTrue();
		gated.close();
		try (RawNbdClient attached = RawNbdClient.connect(server.port(), "gated")) {
			long cookie = attached.sendWrite(0, new byte[4096]);
			gated.awaitWaiting(1);
			CompletableFuture<Void> stopped = CompletableFuture
				.runAsync(() -> server.shutdownGracefully(PATIENCE));
			await().atMost(PATIENCE).until(server::isDraining);
			await().atMost(PATIENCE).until(() -> !Files.exists(socket));
			assertThat(server.unixSocket()).isNull();
			assertThat(stopped).isNotDone();
			assertThatThrownBy(() -> {
				try (SocketChannel probe = SocketChannel.open(StandardProtocolFamily.UNIX)) {
					probe.connect(UnixDomainSocketAddress.of(socket));
				}
			}).isInstanceOf(java.io.IOException.class);
			gated.open();
			RawNbdClient.Reply reply = attached.receive();
			assertThat(reply.cookie()).isEqualTo(cookie);
			assertThat(reply.error()).isZero();
			stopped.get(PATIENCE.toSeconds(), TimeUnit.SECONDS);
		}
		finally {
			gated.open();
		}
	}

	/** After a graceful stop, start() serves again: new connections are let in and answered. */
	@Test
	void aServerStoppedGracefullyStartsAgainAndAnswers() throws Exception {
		GatedBackend backend = GatedBackend.withPattern("mem", 1 << 20);
		NbdServer server = this.servers.start(NbdServerConfig.builder(), backend);
		try (RawNbdClient before = RawNbdClient.connect(server.port(), "mem")) {
			assertThat(before.call(dev.nbd.protocol.NbdProtocol.CMD_READ, 0, 512, null).error()).isZero();
			server.shutdownGracefully(PATIENCE);
			assertThat(before.serverClosed()).isTrue();
		}
		assertThat(server.isRunning()).isFalse();

		server.start();
		assertThat(server.isDraining()).isFalse();
		try (RawNbdClient after = RawNbdClient.connect(server.port(), "mem")) {
			RawNbdClient.Reply reply = after.call(dev.nbd.protocol.NbdProtocol.CMD_READ, 4096, 512, null);
			assertThat(reply.error()).isZero();
			for (int i = 0; i < 512; i++) {
				assertThat(reply.data()[i]).isEqualTo(GatedBackend.expected(4096 + i));
			}
			assertThat(after.call(dev.nbd.protocol.NbdProtocol.CMD_WRITE, 0, 512, new byte[512]).error()).isZero();
		}
		// Everything drained in time: no drain timeout reported, nothing refused.
		assertThat(this.servers.listener().refusals()).doesNotContain("shutting_down", "drain_timeout");
	}

	/**
	 * A write still in the backend when the drain gives up (here at once: no time to wait) is not
	 * answered once the final flush has begun, even if it then succeeds: that flush may not cover
	 * it; the connection left undrained is reported ({@code drain_timeout}). The write is let go
	 * only once the final flush has started, and that flush is held until the client has seen the
	 * connection end, so the order is the same whatever the machine's speed.
	 */
	@Test
	void aWriteFinishingAfterTheFinalFlushBeganIsNotAnswered() throws Exception {
		CountDownLatch flushStarted = new CountDownLatch(1);
		CountDownLatch releaseFlush = new CountDownLatch(1);
		GatedBackend gated = new GatedBackend("gated", 1 << 20) {
			@Override
			public void flush() throws java.io.IOException {
				flushStarted.countDown();
				try {
					releaseFlush.await(PATIENCE.toSeconds(), TimeUnit.SECONDS);
				}
				catch (InterruptedException ex) {
					Thread.currentThread().interrupt();
				}
				super.flush();
			}
		};
		NbdServer server = this.servers.start(NbdServerConfig.builder(), gated);
		gated.close();
		try (RawNbdClient attached = RawNbdClient.connect(server.port(), "gated")) {
			attached.sendWrite(0, new byte[4096]);
			gated.awaitWaiting(1);
			CompletableFuture<Void> stopped = CompletableFuture.runAsync(() -> server.shutdownGracefully(Duration.ZERO));
			assertThat(flushStarted.await(PATIENCE.toSeconds(), TimeUnit.SECONDS)).isTrue();
			gated.open();
			assertThat(attached.closesWithoutData()).as("no reply after the final flush began").isTrue();
			releaseFlush.countDown();
			stopped.get(PATIENCE.toSeconds(), TimeUnit.SECONDS);
			assertThat(gated.events()).containsExactly("write 0", "flush");
			// Given up by the server (the connection's own drain deadline, 30 s, never came).
			assertThat(this.servers.listener().refusals()).containsExactly("drain_timeout");
		}
		finally {
			releaseFlush.countDown();
			gated.open();
		}
	}

	/** A start that fails (the port is taken) leaves no event loop running. */
	@Test
	void aFailedStartEndsItsEventLoops() throws Exception {
		NbdServer first = this.servers.start(NbdServerConfig.builder(), new MemoryBackend("mem", 1 << 20));
		NbdServer second = new NbdServer(NbdServerConfig.builder().port(first.port()).build(),
				List.of(new MemoryBackend("mem", 1 << 20)), java.util.Map.of(), java.util.Map.of(), null);
		assertThatThrownBy(second::start).isInstanceOf(NbdServerException.class).hasMessageContaining("already in use");
		List<EventLoopGroup> groups = second.eventLoopGroups();
		assertThat(groups).hasSize(2);
		for (EventLoopGroup group : groups) {
			await().atMost(PATIENCE).until(group::isTerminated);
		}
	}

	/** The server's allow-list lets in a TCP client whose address it lists, and only that one. */
	@Test
	void theAllowListLetsInTheAddressesItLists() throws Exception {
		NbdServer listed = this.servers.start(NbdServerConfig.builder().allowedAddresses(List.of(Cidr.parse("127.0.0.0/8"))),
				new MemoryBackend("mem", 1 << 20));
		try (RawNbdClient client = RawNbdClient.connect(listed.port(), "mem")) {
			assertThat(client.call(dev.nbd.protocol.NbdProtocol.CMD_READ, 0, 512, null).error()).isZero();
		}
		NbdServer unlisted = this.servers.start(NbdServerConfig.builder().allowedAddresses(List.of(Cidr.parse("192.0.2.0/24"))),
				new MemoryBackend("mem", 1 << 20));
		try (RawNbdClient client = RawNbdClient.connect(unlisted.port())) {
			assertThat(client.closesWithoutData()).isTrue();
		}
		assertThat(this.servers.listener().refusals()).containsExactly("address_not_allowed");
	}

	/** A stop ends the accept and I/O event loops (their threads would otherwise stay). */
	@Test
	void stopEndsTheEventLoops() {
		NbdServer server = this.servers.start(NbdServerConfig.builder(), new MemoryBackend("mem", 1 << 20));
		List<EventLoopGroup> groups = server.eventLoopGroups();
		assertThat(groups).hasSize(2);
		server.stop();
		for (EventLoopGroup group : groups) {
			await().atMost(PATIENCE).until(group::isTerminated);
		}
	}

	/**
	 * Under {@code max-connections}, a connection refused for the limit does not keep a place,
	 * and one that closes gives its place back.
	 */
	@Test
	void aRefusedOrClosedConnectionGivesItsPlaceBack() throws Exception {
		NbdServer server = this.servers.start(NbdServerConfig.builder().maxConnections(1),
				new MemoryBackend("mem", 1 << 20));
		try (RawNbdClient first = RawNbdClient.connect(server.port())) {
			first.greeting();
			for (int i = 0; i < 2; i++) {
				try (RawNbdClient refused = RawNbdClient.connect(server.port())) {
					assertThat(refused.closesWithoutData()).isTrue();
				}
			}
			assertThat(this.servers.listener().refusals("max_connections")).isEqualTo(2);
		}
		await().atMost(PATIENCE).until(() -> server.allConnections().isEmpty());
		try (RawNbdClient next = RawNbdClient.connect(server.port(), "mem")) {
			assertThat(next.call(dev.nbd.protocol.NbdProtocol.CMD_READ, 0, 512, null).error()).isZero();
		}
		assertThat(this.servers.listener().refusals("max_connections")).isEqualTo(2);
	}

}
