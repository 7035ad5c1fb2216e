package dev.nbd.autoconfigure;

import java.io.IOException;
import java.net.SocketException;
import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

import org.assertj.core.api.SoftAssertions;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import org.springframework.boot.WebApplicationType;
import org.springframework.boot.autoconfigure.ImportAutoConfiguration;
import org.springframework.boot.autoconfigure.context.LifecycleAutoConfiguration;
import org.springframework.boot.autoconfigure.ssl.SslAutoConfiguration;
import org.springframework.boot.builder.SpringApplicationBuilder;
import org.springframework.boot.test.system.CapturedOutput;
import org.springframework.boot.test.system.OutputCaptureExtension;
import org.springframework.context.ConfigurableApplicationContext;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;

import dev.nbd.backend.ExportBackend;
import dev.nbd.backend.MemoryBackend;
import dev.nbd.protocol.NbdError;
import dev.nbd.protocol.NbdProtocol;
import dev.nbd.server.NbdConnection;
import dev.nbd.server.Export;
import dev.nbd.server.NbdServer;
import dev.nbd.server.NbdServerListener;
import dev.nbd.testsupport.GatedBackend;
import dev.nbd.testsupport.PipelinedNbdClient;
import dev.nbd.testsupport.PipelinedReads;
import dev.nbd.testsupport.RawNbdClient;
import dev.nbd.testsupport.RecordingListener;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

/**
 * Graceful shutdown through Spring's lifecycle ({@code context.close()}, what SIGTERM runs):
 * every request already received is answered completely (data, or {@code NBD_ESHUTDOWN} for
 * work not started), a client still negotiating gets {@code NBD_REP_ERR_SHUTDOWN}, new
 * connections are refused, the exports are synced after the last write, and a client that stops
 * reading is cut off after {@code nbd.server.drain-timeout}.
 */
@ExtendWith(OutputCaptureExtension.class)
class GracefulShutdownLifecycleTests {

	private static final int MIB = 1024 * 1024;

	/** Upper bound for anything here; a loaded machine stays far below it. */
	private static final Duration PATIENCE = Duration.ofSeconds(60);

	private ConfigurableApplicationContext context;

	@AfterEach
	void closeContext() {
		if (this.context != null) {
			this.context.close();
		}
	}

	private NbdServer start(String... properties) {
		return start(App.class, properties);
	}

	private NbdServer start(Class<?> application, String... properties) {
		List<String> all = new ArrayList<>(List.of("nbd.server.port=0", "spring.lifecycle.timeout-per-shutdown-phase=60s"));
		all.addAll(List.of(properties));
		this.context = new SpringApplicationBuilder(application).web(WebApplicationType.NONE)
			.registerShutdownHook(false)
			.properties(all.toArray(String[]::new))
			.run();
		return this.context.getBean(NbdServer.class);
	}

	private CompletableFuture<Void> closeInBackground(NbdServer server) {
		CompletableFuture<Void> closed = CompletableFuture.runAsync(this.context::close);
		await().atMost(PATIENCE).until(server::isDraining);
		return closed;
	}

	@Test
	void closeAnswersEveryRequestInFlightRefusesNewcomersAndSyncsLast() throws Exception {
		NbdServer server = start("nbd.server.max-in-flight=4");
		GatedBackend gated = this.context.getBean(GatedBackend.class);
		int port = server.port();
		gated.close();
		try (RawNbdClient attached = RawNbdClient.connect(port, "gated");
				RawNbdClient listing = RawNbdClient.connect(port);
				RawNbdClient going = RawNbdClient.connect(port)) {
			listing.handshake();
			going.handshake();
			// Six requests, four started (held at the gate), two behind max-in-flight: queued if
			// they came in the socket read that brought the fourth, else still unread in the socket
			// (the server stops reading at max-in-flight; which one depends on how the bytes were
			// split into reads). Either way each gets a reply, with data or ESHUTDOWN.
			Map<Long, Long> reads = new HashMap<>();
			Map<Long, Long> writes = new HashMap<>();
			for (int i = 0; i < 3; i++) {
				writes.put(attached.sendWrite(i * 4096L, new byte[4096]), i * 4096L);
				long offset = 65536L + i * 8192;
				reads.put(attached.sendRead(offset, 8192), offset);
			}
			await().atMost(PATIENCE).until(() -> gated.started() == 4 && inFlight(server) >= 4);
			CompletableFuture<Void> closed = closeInBackground(server);

			// Soft: a failure here must not hide what happens to the requests in flight.
			SoftAssertions softly = new SoftAssertions();
			softly.assertThat(RawNbdClient.refusesConnection(port)).as("a new connection during the drain is refused")
				.isTrue();
			softly.assertThat(listing.request(NbdProtocol.OPT_LIST, new byte[0]).type())
				.as("LIST while shutting down")
				.isEqualTo(NbdProtocol.REP_ERR_SHUTDOWN);
			softly.assertThat(going.request(NbdProtocol.OPT_GO, RawNbdClient.goData("gated")).type())
				.as("GO while shutting down")
				.isEqualTo(NbdProtocol.REP_ERR_SHUTDOWN);

			gated.open();
			List<Long> started = gated.startedOffsets();
			for (int i = 0; i < 6; i++) {
				RawNbdClient.Reply reply = attached.receive();
				Long readOffset = reads.get(reply.cookie());
				long offset = (readOffset != null) ? readOffset : writes.get(reply.cookie());
				if (reply.error() == NbdError.ESHUTDOWN.code()) {
					assertThat(started).as("request at %d was started, then answered ESHUTDOWN", offset)
						.doesNotContain(offset);
					continue;
				}
				assertThat(reply.error()).as("reply to the request at %d", offset).isZero();
				if (readOffset != null) {
					for (int j = 0; j < reply.data().length; j++) {
						assertThat(reply.data()[j]).isEqualTo(GatedBackend.expected(readOffset + j));
					}
				}
			}
			assertThat(attached.serverClosed()).isTrue();
			closed.get(PATIENCE.toSeconds(), TimeUnit.SECONDS);
			// The final sync comes after every write the server started.
			List<String> events = gated.events();
			assertThat(events).contains("flush");
			int lastWrite = -1;
			for (int i = 0; i < events.size(); i++) {
				if (events.get(i).startsWith("write")) {
					lastWrite = i;
				}
			}
			assertThat(events.lastIndexOf("flush")).as(events.toString()).isGreaterThan(lastWrite);
			softly.assertAll();
		}
		finally {
			gated.open();
		}
	}

	@Test
	void closeWaitsForAClientReadingItsRepliesAtAnOrdinaryPace() throws Exception {
		NbdServer server = start();
		try (RawNbdClient client = PipelinedReads.smallWindowClient(server.port(), "mem")) {
			PipelinedReads reads = sixteenReads(client);
			// All received, replies backed up (16 MiB, far more than the socket buffers) when the
			// drain begins.
			await().atMost(PATIENCE).until(() -> requests(server) == 16 && bytesRead(server) > 0);
			CompletableFuture<Void> closed = closeInBackground(server);
			reads.receiveWithAPause(client, 14, () -> inFlight(server) == 0);
			// Each whole: with its data, or NBD_ESHUTDOWN for one the server had not read yet.
			assertThat(reads.answered()).as("complete replies").isEqualTo(16);
			assertThat(client.serverClosed()).isTrue();
			closed.get(PATIENCE.toSeconds(), TimeUnit.SECONDS);
		}
	}

	@Test
	void aClientThatStopsReadingIsCutOffAfterTheDrainTimeout(CapturedOutput output) throws Exception {
		NbdServer server = start("nbd.server.drain-timeout=1s", "spring.lifecycle.timeout-per-shutdown-phase=120s");
		RecordingListener listener = this.context.getBean(RecordingListener.class);
		try (RawNbdClient client = RawNbdClient.connect(server.port(), "mem")) {
			sixteenReads(client);
			await().atMost(PATIENCE).until(() -> bytesRead(server) > 0);
			long begin = System.nanoTime();
			CompletableFuture<Void> closed = closeInBackground(server);
			// Bounded by the drain timeout (1s), not by the shutdown phase (120s); 30s is only an
			// upper bound for a loaded machine.
			await().atMost(Duration.ofSeconds(30)).until(closed::isDone);
			closed.get();
			assertThat(Duration.ofNanos(System.nanoTime() - begin)).isLessThan(Duration.ofSeconds(30));
			assertThat(client.closedByServer(10_000)).isTrue();
			assertThat(listener.refusals()).contains("drain_timeout");
			assertThat(output).containsPattern("WARN.*drain_timeout");
		}
	}

	/**
	 * A write still running when the drain times out is never answered with success once the
	 * final flush started (that flush may not cover it); requests arriving during the drain get
	 * {@code NBD_ESHUTDOWN}.
	 */
	@Test
	void aWriteRunningPastTheDrainIsNotAnsweredAfterTheFinalFlush() throws Exception {
		NbdServer server = start(StuckWriteApp.class, "nbd.server.drain-timeout=1s",
				"spring.lifecycle.timeout-per-shutdown-phase=3s");
		StuckWriteBackend stuck = this.context.getBean(StuckWriteBackend.class);
		try (PipelinedNbdClient client = PipelinedNbdClient.connect(server.port(), "stuck")) {
			PipelinedNbdClient.Pending write = client.write(0, new byte[4096], false);
			assertThat(stuck.writeStarted.await(PATIENCE.toSeconds(), TimeUnit.SECONDS)).isTrue();
			CompletableFuture<Void> closed = closeInBackground(server);
			PipelinedNbdClient.Reply refused = client.write(8192, new byte[4096], false)
				.reply()
				.get(PATIENCE.toSeconds(), TimeUnit.SECONDS);
			assertThat(refused.error()).isEqualTo(NbdError.ESHUTDOWN.code());
			closed.get(PATIENCE.toSeconds(), TimeUnit.SECONDS);
			assertThat(stuck.flushed).isTrue();
			PipelinedNbdClient.Reply late = null;
			try {
				late = write.reply().get(PATIENCE.toSeconds(), TimeUnit.SECONDS);
			}
			catch (ExecutionException ex) {
				// Connection closed without an answer: what the contract asks for.
			}
			assertThat(late == null || late.error() != 0).as("late write answered with success").isTrue();
		}
	}

	/** Sixteen pipelined 1 MiB READs of {@code mem}. */
	static PipelinedReads sixteenReads(RawNbdClient client) throws IOException {
		return new PipelinedReads(App::pattern).send(client, 16, MIB);
	}

	private static int inFlight(NbdServer server) {
		return server.connections().stream().mapToInt(NbdConnection::inFlight).sum();
	}

	private static long requests(NbdServer server) {
		return server.connections().stream().mapToLong(NbdConnection::requests).sum();
	}

	private static long bytesRead(NbdServer server) {
		return server.connections().stream().mapToLong(NbdConnection::bytesRead).sum();
	}

	// LifecycleAutoConfiguration applies spring.lifecycle.timeout-per-shutdown-phase to the
	// context's lifecycle processor (else it waits 10s for NBD and closes the context meanwhile).
	@Configuration(proxyBeanMethods = false)
	@ImportAutoConfiguration({ LifecycleAutoConfiguration.class, NbdServerAutoConfiguration.class,
			SslAutoConfiguration.class })
	static class StuckWriteApp {

		@Bean
		StuckWriteBackend stuck() {
			return new StuckWriteBackend();
		}

		@Bean
		NbdServerListener stuckWriteCompletions(StuckWriteBackend stuck) {
			return new NbdServerListener() {
				@Override
				public void requestCompleted(Export export, String op, String outcome, long nanos, long bytes) {
					if (export.name().equals("stuck")) {
						stuck.writeHandled.countDown();
					}
				}
			};
		}

	}

	/**
	 * Its first write blocks until the final flush runs, so it outlives any drain; the flush lets
	 * it return and waits until the server has dealt with its reply.
	 */
	static final class StuckWriteBackend implements ExportBackend {

		final CountDownLatch writeStarted = new CountDownLatch(1);

		final CountDownLatch writeHandled = new CountDownLatch(1);

		private final CountDownLatch release = new CountDownLatch(1);

		volatile boolean flushed;

		@Override
		public String name() {
			return "stuck";
		}

		@Override
		public long size() {
			return MIB;
		}

		@Override
		public boolean isMultiConnSafe() {
			return true;
		}

		@Override
		public boolean canFlush() {
			return true;
		}

		@Override
		public void read(long offset, ByteBuffer dst) {
			dst.position(dst.limit());
		}

		@Override
		public void write(long offset, ByteBuffer src, boolean fua) throws IOException {
			src.position(src.limit());
			if (offset == 0) {
				this.writeStarted.countDown();
				await(this.release);
			}
		}

		@Override
		public void flush() {
			this.flushed = true;
			this.release.countDown();
			// Whatever the server does with the late write's reply happens now, during the flush.
			await(this.writeHandled);
		}

		private static void await(CountDownLatch latch) {
			try {
				latch.await(PATIENCE.toSeconds(), TimeUnit.SECONDS);
			}
			catch (InterruptedException ex) {
				Thread.currentThread().interrupt();
			}
		}

	}

	// LifecycleAutoConfiguration applies spring.lifecycle.timeout-per-shutdown-phase to the
	// context's lifecycle processor (else it waits 10s for NBD and closes the context meanwhile).
	@Configuration(proxyBeanMethods = false)
	@ImportAutoConfiguration({ LifecycleAutoConfiguration.class, NbdServerAutoConfiguration.class,
			SslAutoConfiguration.class })
	static class App {

		static int pattern(long offset) {
			return (byte) (offset * 31 + (offset >>> 20));
		}

		@Bean
		GatedBackend gated() {
			return GatedBackend.withPattern("gated", MIB);
		}

		@Bean
		MemoryBackend mem() throws IOException {
			MemoryBackend mem = new MemoryBackend("mem", 16 * MIB);
			byte[] block = new byte[MIB];
			for (long base = 0; base < 16 * MIB; base += MIB) {
				for (int i = 0; i < MIB; i++) {
					block[i] = (byte) pattern(base + i);
				}
				mem.write(base, ByteBuffer.wrap(block), false);
			}
			return mem;
		}

		@Bean
		RecordingListener recordingListener() {
			return new RecordingListener();
		}

	}

}
