package dev.nbd.server;

import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Random;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.io.TempDir;

import dev.nbd.backend.ExportBackend;
import dev.nbd.backend.FileBackend;
import dev.nbd.backend.MemoryBackend;
import dev.nbd.testsupport.Libnbd;
import dev.nbd.testsupport.NbdServerExtension;
import dev.nbd.testsupport.Processes;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * What a real client reads is what was stored, on every READ path: a file export served from
 * the file on the network thread (pread for small reads, sendfile for large ones), and the
 * memory export (header and data in one buffer when small, data chunks and hole chunks), with
 * simple and structured replies, at sizes on both sides of the thresholds, many in flight.
 */
class ReadPathTests {

	@TempDir
	Path dir;

	@RegisterExtension
	final NbdServerExtension servers = new NbdServerExtension();

	private NbdServer server;

	private FileBackend backend;

	@AfterEach
	void stop() throws Exception {
		// The server first: it may still sync the file.
		this.servers.stopAll();
		if (this.backend != null) {
			this.backend.close();
		}
	}

	@Test
	void fileExportReadsReturnTheFileBytes() throws Exception {
		Path file = this.dir.resolve("disk.img");
		Files.write(file, content());
		this.backend = new FileBackend("disk", file, 4 << 20, null, false, true);
		assertReadsMatch(this.backend, file);
	}

	@Test
	void memoryExportReadsReturnWhatWasWrittenWithHolesAsZeroes() throws Exception {
		Path file = this.dir.resolve("expected.img");
		byte[] content = content();
		Files.write(file, content);
		MemoryBackend memory = new MemoryBackend("disk", content.length);
		// Zero pages are not stored: the export has holes wherever content() left zeroes.
		memory.write(0, ByteBuffer.wrap(content), false);
		assertReadsMatch(memory, file);
	}

	/** 4 MiB of random bytes with zeroed runs (holes for the memory export), some page-aligned. */
	private static byte[] content() {
		Random random = new Random(3);
		byte[] content = new byte[4 << 20];
		random.nextBytes(content);
		for (int i = 0; i < 64; i++) {
			int length = (1 + random.nextInt(64)) * 4096;
			int start = random.nextInt(content.length - length) & ~((i % 2 == 0) ? 4095 : 0);
			java.util.Arrays.fill(content, start, start + length, (byte) 0);
		}
		return content;
	}

	private void assertReadsMatch(ExportBackend backend, Path expected) throws Exception {
		Libnbd.require();
		this.server = this.servers.start(NbdServerConfig.builder(), backend);
		String script = """
				import random
				data = open(%s, "rb").read()
				rng = random.Random(5)
				for structured in (False, True):
				    h = nbd.NBD()
				    h.set_request_structured_replies(structured)
				    h.connect_uri("nbd://127.0.0.1:%d/disk")
				    assert h.get_structured_replies_negotiated() == structured
				    for n in (1, 512, 4096, 65535, 65536, 65537, 1 << 20, 3 << 20):
				        for _ in range(4):
				            off = rng.randrange(0, len(data) - n + 1)
				            assert h.pread(n, off) == data[off:off + n], (structured, n, off)
				    # Many reads in flight at once, replies interleaved on the wire.
				    bufs = [(nbd.Buffer(n), off) for n, off in ((rng.choice((4096, 131072)), rng.randrange(0, len(data) - 131072)) for _ in range(64))]
				    cookies = [h.aio_pread(b, off) for b, off in bufs]
				    while h.aio_in_flight() > 0:
				        h.poll(-1)
				    for b, off in bufs:
				        assert b.to_bytearray() == data[off:off + len(b.to_bytearray())]
				    h.shutdown()
				print("OK")
				""".formatted("'" + expected + "'", this.server.port());
		Processes.Result result = Libnbd.nbdsh(Duration.ofSeconds(60), null, script).assertSuccess();
		assertThat(result.stdout()).contains("OK");
	}

}
