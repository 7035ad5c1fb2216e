package dev.nbd.server;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Random;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import dev.nbd.backend.FileBackend;
import dev.nbd.testsupport.ExternalTool;
import dev.nbd.testsupport.Processes;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * READs of a file export are served from the file on the network thread (pread for small
 * reads, sendfile for large ones): what a real client reads must be the file's bytes, with
 * simple and structured replies, at sizes on both sides of the sendfile threshold.
 */
class FileReadPathTests {

	@TempDir
	Path dir;

	private NbdServer server;

	private FileBackend backend;

	@AfterEach
	void stop() throws Exception {
		if (this.server != null) {
			this.server.stop();
		}
		if (this.backend != null) {
			this.backend.close();
		}
	}

	@Test
	void readsReturnTheFileBytesWithSimpleAndStructuredReplies() throws Exception {
		Path nbdsh = ExternalTool.require("nbdsh");
		Path file = this.dir.resolve("disk.img");
		byte[] content = new byte[4 << 20];
		new Random(3).nextBytes(content);
		Files.write(file, content);
		this.backend = new FileBackend("disk", file, content.length, null, false);
		this.server = new NbdServer(NbdServerConfig.builder().port(0).build(), List.of(this.backend), Map.of(),
				Map.of(), null);
		this.server.start();
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
				""".formatted("'" + file + "'", this.server.port());
		Processes.Result result = Processes.run(Duration.ofSeconds(60), nbdsh.toString(), "-c", script)
			.assertSuccess();
		assertThat(result.stdout()).contains("OK");
	}

}
