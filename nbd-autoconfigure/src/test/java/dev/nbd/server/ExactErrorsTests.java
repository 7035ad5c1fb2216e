package dev.nbd.server;

import java.io.IOException;
import java.nio.file.AccessDeniedException;
import java.nio.file.FileSystemException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.function.Supplier;
import java.util.stream.Stream;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.condition.EnabledOnOs;
import org.junit.jupiter.api.condition.OS;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

import dev.nbd.backend.FileBackend;
import dev.nbd.backend.MemoryBackend;
import dev.nbd.backend.filter.Fault;
import dev.nbd.backend.filter.FaultInjectingBackend;
import dev.nbd.backend.filter.Operation;
import dev.nbd.protocol.NbdError;
import dev.nbd.protocol.NbdProtocol;
import dev.nbd.testsupport.ExternalTool;
import dev.nbd.testsupport.Libnbd;
import dev.nbd.testsupport.NbdServerExtension;
import dev.nbd.testsupport.Processes;
import dev.nbd.testsupport.RawNbdClient;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * A client sees the error that happened, not EIO for everything: a full disk (ENOSPC, EDQUOT,
 * EFBIG) is NBD_ENOSPC, a refused write (EROFS, EACCES, EPERM) NBD_EPERM, an allocation failure
 * NBD_ENOMEM, and only a real I/O error NBD_EIO. The failures are what the JDK throws (its
 * exception types and strerror messages), injected behind the server; one is a real EFBIG from
 * the file backend.
 */
class ExactErrorsTests {

	private static final int SIZE = 4 << 20;

	@TempDir
	Path dir;

	@RegisterExtension
	final NbdServerExtension servers = new NbdServerExtension();

	private NbdServer server;

	static Stream<Arguments> failures() {
		return Stream.of(
				Arguments.of("ENOSPC", (Supplier<Throwable>) () -> new IOException("No space left on device"),
						NbdError.ENOSPC),
				Arguments.of("EDQUOT", (Supplier<Throwable>) () -> new IOException("Disk quota exceeded"),
						NbdError.ENOSPC),
				Arguments.of("EFBIG", (Supplier<Throwable>) () -> new IOException("File too large"), NbdError.ENOSPC),
				Arguments.of("EROFS",
						(Supplier<Throwable>) () -> new FileSystemException("/data/disk.img", null,
								"Read-only file system"),
						NbdError.EPERM),
				Arguments.of("EACCES", (Supplier<Throwable>) () -> new AccessDeniedException("/data/disk.img"),
						NbdError.EPERM),
				Arguments.of("EPERM", (Supplier<Throwable>) () -> new IOException("Operation not permitted"),
						NbdError.EPERM),
				Arguments.of("direct memory",
						(Supplier<Throwable>) () -> new OutOfMemoryError(
								"Cannot reserve 1048576 bytes of direct buffer memory (allocated: 0, limit: 0)"),
						NbdError.ENOMEM),
				Arguments.of("heap", (Supplier<Throwable>) () -> new OutOfMemoryError("Java heap space"),
						NbdError.ENOMEM),
				Arguments.of("wrapped",
						(Supplier<Throwable>) () -> new IOException("write failed",
								new IOException("No space left on device")),
						NbdError.ENOSPC),
				Arguments.of("EIO", (Supplier<Throwable>) () -> new IOException("Input/output error"), NbdError.EIO),
				Arguments.of("a bug", (Supplier<Throwable>) () -> new IllegalStateException("oops"), NbdError.EIO));
	}

	@ParameterizedTest(name = "{0}")
	@MethodSource("failures")
	void backendFailuresReachTheClientAsTheirNbdError(String name, Supplier<Throwable> failure, NbdError expected)
			throws Exception {
		this.server = this.servers.start(FaultInjectingBackend.builder(new MemoryBackend("disk", SIZE))
			.fault(Fault.exception(failure).on(Operation.WRITE, Operation.FLUSH).at(1 << 20, 4096))
			.build());
		try (RawNbdClient client = RawNbdClient.connect(this.server.port(), "disk")) {
			assertThat(client.call(NbdProtocol.CMD_WRITE, 0, 4096, new byte[4096]).error()).isZero();
			assertThat(client.call(NbdProtocol.CMD_WRITE, 1 << 20, 4096, new byte[4096]).error())
				.isEqualTo(expected.code());
			// The connection goes on: the next request outside the faulty range succeeds.
			assertThat(client.call(NbdProtocol.CMD_WRITE, 2 << 20, 4096, new byte[4096]).error()).isZero();
		}
	}

	/** A long WRITE_ZEROES runs in chunks: a later chunk's failure reaches the client as its own NBD error. */
	@Test
	void aLongRequestFailingInALaterChunkGetsItsNbdError() throws Exception {
		this.server = this.servers.start(FaultInjectingBackend.builder(new MemoryBackend("disk", 64 << 20))
			.fault(Fault.exception(() -> new IOException("Disk quota exceeded")).on(Operation.ZERO).at(40 << 20, 1))
			.build());
		try (RawNbdClient client = RawNbdClient.connect(this.server.port(), "disk")) {
			assertThat(client.call(NbdProtocol.CMD_WRITE_ZEROES, 0, 32 << 20, null).error()).isZero();
			assertThat(client.call(NbdProtocol.CMD_WRITE_ZEROES, 32 << 20, 32 << 20, null).error())
				.isEqualTo(NbdError.ENOSPC.code());
		}
	}

	/**
	 * A real EFBIG: the process's file size limit (RLIMIT_FSIZE, lowered for a moment with
	 * prlimit) below a write's offset makes pwrite fail, and the file backend's client sees
	 * NBD_ENOSPC, not NBD_EIO.
	 */
	@Test
	@EnabledOnOs(OS.LINUX)
	void fileBackendReportsAFileSizeLimitAsEnospc() throws Exception {
		Path prlimit = ExternalTool.require("prlimit");
		FileBackend file = this.servers
			.closeAfter(new FileBackend("disk", this.dir.resolve("disk.img"), 64 << 20, null, false));
		this.server = this.servers.start(file);
		String pid = Long.toString(ProcessHandle.current().pid());
		String soft = Processes
			.run(Duration.ofSeconds(10), prlimit.toString(), "--pid", pid, "--fsize", "--output", "SOFT", "--noheadings")
			.assertSuccess()
			.stdout()
			.trim();
		try (RawNbdClient client = RawNbdClient.connect(this.server.port(), "disk")) {
			Processes.run(Duration.ofSeconds(10), prlimit.toString(), "--pid", pid, "--fsize=" + (32 << 20) + ":")
				.assertSuccess();
			try {
				assertThat(client.call(NbdProtocol.CMD_WRITE, 48 << 20, 4096, new byte[4096]).error())
					.isEqualTo(NbdError.ENOSPC.code());
				assertThat(client.call(NbdProtocol.CMD_WRITE, 0, 4096, new byte[4096]).error()).isZero();
			}
			finally {
				Processes.run(Duration.ofSeconds(10), prlimit.toString(), "--pid", pid, "--fsize=" + soft + ":")
					.assertSuccess();
			}
			assertThat(client.call(NbdProtocol.CMD_WRITE, 48 << 20, 4096, new byte[4096]).error()).isZero();
		}
	}

	/** What libnbd (nbdsh) reports as errno for each failure. */
	@Test
	void libnbdSeesTheErrno() throws Exception {
		Libnbd.require();
		this.server = this.servers.start(FaultInjectingBackend.builder(new MemoryBackend("disk", SIZE))
			.fault(Fault.error(NbdError.ENOSPC).on(Operation.WRITE).at(1 << 20, 1))
			.fault(Fault.exception(() -> new IOException("Read-only file system")).on(Operation.WRITE).at(2 << 20, 1))
			.fault(Fault.exception(() -> new OutOfMemoryError("Direct buffer memory"))
				.on(Operation.READ)
				.at(3 << 20, 1))
			.fault(Fault.exception(() -> new IOException("Input/output error")).on(Operation.READ).at(0, 1))
			.build());
		String script = """
				import errno
				h = nbd.NBD()
				h.connect_uri("nbd://127.0.0.1:%d/disk")
				def fails(op, expected):
				    try:
				        op()
				    except nbd.Error as e:
				        # libnbd gives errno as its name ("ENOSPC"), older versions as the number.
				        got = getattr(errno, e.errno) if isinstance(e.errno, str) else e.errno
				        assert got == expected, (e.errno, expected, e.string)
				        return
				    raise AssertionError("no error, expected %%d" %% expected)
				h.pwrite(b"x" * 4096, 4096)
				# Data where reads fail (holes are answered without reading).
				h.pwrite(b"y" * 4096, 0)
				h.pwrite(b"y" * 4096, 3 << 20)
				fails(lambda: h.pwrite(b"x" * 4096, 1 << 20), errno.ENOSPC)
				fails(lambda: h.pwrite(b"x" * 4096, 2 << 20), errno.EPERM)
				fails(lambda: h.pread(4096, 3 << 20), errno.ENOMEM)
				fails(lambda: h.pread(4096, 0), errno.EIO)
				assert h.pread(4096, 4096) == b"x" * 4096
				h.shutdown()
				print("OK")
				""".formatted(this.server.port());
		Processes.Result result = Libnbd.nbdsh(Duration.ofSeconds(60), null, script).assertSuccess();
		assertThat(result.stdout()).contains("OK");
	}

}
