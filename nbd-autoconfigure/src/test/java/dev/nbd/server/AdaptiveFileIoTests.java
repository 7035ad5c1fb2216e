package dev.nbd.server;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.locks.LockSupport;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.io.TempDir;

import dev.nbd.backend.FileBackend;
import dev.nbd.protocol.NbdProtocol;
import dev.nbd.testsupport.NbdServerExtension;
import dev.nbd.testsupport.RawNbdClient;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * Where a served file's reads and plain writes run ({@link EventLoopIo}), seen from the thread
 * that calls the backend: adaptive runs them on the network thread until one is slow, then on
 * workers until enough are fast in a row; ALWAYS and NEVER do not move.
 */
class AdaptiveFileIoTests {

	private static final long SLOW_NANOS = 5_000_000;

	@RegisterExtension
	final NbdServerExtension servers = new NbdServerExtension();

	@TempDir
	Path dir;

	@Test
	void slowWritesMoveToWorkersAndComeBackOnceFast() throws Exception {
		SlowFile file = file("disk");
		NbdServer server = this.servers.start(file);
		try (RawNbdClient client = RawNbdClient.connect(server.port(), "disk")) {
			untilOnNetworkThread(server, () -> write(client, file));
			long fallbacks = server.export("disk").fileIo().fallbacks();
			file.delayNanos = SLOW_NANOS;
			assertThat(write(client, file)).as("the first slow call ran here").startsWith("nbd-io");
			assertThat(untilOnWorker(() -> write(client, file))).as("slow calls that moved")
				.isLessThan(EventLoopFileIo.SLOW_TO_MOVE);
			assertThat(server.export("disk").fileIo().fallbacks()).isEqualTo(fallbacks + 1);
			file.delayNanos = 0;
			// Fewer fast calls than required cannot bring them back (a call slowed down by a busy
			// machine only makes it take longer).
			for (int i = 0; i < EventLoopFileIo.MIN_REQUIRED - 1; i++) {
				assertThat(write(client, file)).as("fast call %d on workers", i).startsWith("nbd-worker");
			}
			untilOnNetworkThread(server, () -> write(client, file));
		}
	}

	@Test
	void slowReadsMoveToWorkers() throws Exception {
		SlowFile file = file("disk");
		NbdServer server = this.servers.start(file);
		try (RawNbdClient client = RawNbdClient.connect(server.port(), "disk")) {
			untilOnNetworkThread(server, () -> read(client, file));
			file.delayNanos = SLOW_NANOS;
			assertThat(read(client, file)).startsWith("nbd-io");
			assertThat(untilOnWorker(() -> read(client, file))).isLessThan(EventLoopFileIo.SLOW_TO_MOVE);
		}
	}

	/**
	 * Calls {@code call} until one runs on a network thread and the next will too: the first calls
	 * of a fresh JVM can be slow (class loading, interpreted code) and send the export to workers
	 * for a while.
	 */
	private static void untilOnNetworkThread(NbdServer server, ThrowingCall call) throws IOException {
		EventLoopFileIo io = server.export("disk").fileIo();
		String thread = call.run();
		for (int i = 0; i < 4 * EventLoopFileIo.MAX_REQUIRED && !(thread.startsWith("nbd-io") && io.onEventLoop()); i++) {
			thread = call.run();
		}
		assertThat(thread).startsWith("nbd-io");
		assertThat(io.onEventLoop()).isTrue();
	}

	/** Calls {@code call} until it runs on a worker (at most 100 times); how many calls ran elsewhere first. */
	private static int untilOnWorker(ThrowingCall call) throws IOException {
		for (int i = 0; i < 100; i++) {
			if (call.run().startsWith("nbd-worker")) {
				return i;
			}
		}
		throw new AssertionError("slow calls never moved to a worker");
	}

	interface ThrowingCall {

		String run() throws IOException;

	}

	@Test
	void alwaysStaysOnTheNetworkThreadAndNeverStaysOnWorkers() throws Exception {
		SlowFile always = file("always");
		SlowFile never = file("never");
		always.delayNanos = SLOW_NANOS;
		NbdServer server = this.servers.startWithPolicies(NbdServerConfig.builder(), List.of(always, never),
				Map.of("always", ExportPolicy.builder().eventLoopIo(EventLoopIo.ALWAYS).build(), "never",
						ExportPolicy.builder().eventLoopIo(EventLoopIo.NEVER).build()));
		try (RawNbdClient a = RawNbdClient.connect(server.port(), "always");
				RawNbdClient n = RawNbdClient.connect(server.port(), "never")) {
			for (int i = 0; i < 3; i++) {
				assertThat(write(a, always)).startsWith("nbd-io");
				assertThat(write(n, never)).startsWith("nbd-worker");
				assertThat(read(n, never)).startsWith("nbd-worker");
			}
			assertThat(server.export("never").fileIo()).isNull();
		}
	}

	private SlowFile file(String name) throws IOException {
		return this.servers.closeAfter(new SlowFile(name, this.dir.resolve(name + ".img")));
	}

	/** A plain 4 KiB write; the name of the thread that called the backend. */
	private static String write(RawNbdClient client, SlowFile file) throws IOException {
		assertThat(client.call(NbdProtocol.CMD_WRITE, 0, 4096, new byte[4096]).error()).isZero();
		return file.lastThread;
	}

	private static String read(RawNbdClient client, SlowFile file) throws IOException {
		assertThat(client.call(NbdProtocol.CMD_READ, 0, 4096, null).error()).isZero();
		return file.lastThread;
	}

	/** A file export whose reads and writes take {@code delayNanos} (slow storage) and record their thread. */
	static final class SlowFile extends FileBackend {

		volatile long delayNanos;

		volatile String lastThread;

		SlowFile(String name, Path path) throws IOException {
			super(name, path, 1 << 20, null, false);
		}

		@Override
		public void read(long offset, ByteBuffer dst) throws IOException {
			call();
			super.read(offset, dst);
		}

		@Override
		public void write(long offset, ByteBuffer src, boolean fua) throws IOException {
			call();
			super.write(offset, src, fua);
		}

		private void call() {
			this.lastThread = Thread.currentThread().getName();
			long end = System.nanoTime() + this.delayNanos;
			while (this.delayNanos > 0 && System.nanoTime() - end < 0) {
				LockSupport.parkNanos(end - System.nanoTime());
			}
		}

	}

}
