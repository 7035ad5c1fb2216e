package dev.nbd.sample.interop;

import java.io.IOException;
import java.io.InputStream;
import java.nio.channels.FileChannel;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.TreeMap;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.springframework.boot.test.context.SpringBootTest;
import org.springframework.boot.test.context.SpringBootTest.WebEnvironment;
import org.springframework.test.annotation.DirtiesContext;
import org.springframework.test.context.DynamicPropertyRegistry;
import org.springframework.test.context.DynamicPropertySource;
import tools.jackson.databind.JsonNode;
import tools.jackson.databind.json.JsonMapper;

import dev.nbd.autoconfigure.LocalNbdServerPort;
import dev.nbd.testsupport.ExternalTool;
import dev.nbd.testsupport.Libnbd;
import dev.nbd.testsupport.Processes;
import dev.nbd.testsupport.Processes.Result;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * The sample app against the real clients users have: libnbd's nbdinfo, nbdsh and nbdcopy, and
 * qemu's qemu-img and qemu-io. The disk export lives in a temporary directory and is made
 * smaller than the default so whole-export copies stay fast.
 */
@SpringBootTest(webEnvironment = WebEnvironment.RANDOM_PORT,
		properties = { "nbd.server.port=0", "nbd.exports.disk.size=64MB" })
@DirtiesContext
class RealClientInteropTests {

	private static final long MEM_SIZE = 1L << 30;

	private static final long DISK_SIZE = 64L << 20;

	private static final Duration TIMEOUT = Duration.ofSeconds(60);

	private static final JsonMapper json = JsonMapper.builder().build();

	@TempDir
	static Path dir;

	@DynamicPropertySource
	static void diskInTempDir(DynamicPropertyRegistry registry) {
		registry.add("nbd.exports.disk.path", () -> dir.resolve("disk.img").toString());
	}

	@LocalNbdServerPort
	int port;

	@Test
	void nbdinfoReportsEachExportWithItsFlags() {
		ExternalTool.require("nbdinfo");
		JsonNode mem = info("mem");
		assertThat(mem.get("protocol").asString()).isEqualTo("newstyle-fixed");
		assertThat(mem.get("structured").asBoolean()).isTrue();
		JsonNode memExport = mem.get("exports").get(0);
		assertThat(memExport.get("export-name").asString()).isEqualTo("mem");
		assertThat(memExport.get("export-size").asLong()).isEqualTo(MEM_SIZE);
		assertThat(memExport.get("description").asString()).isEqualTo("1 GiB sparse in-memory disk");
		assertThat(flags(memExport)).containsExactlyInAnyOrderEntriesOf(Map.of("is_read_only", false,
				"is_rotational", false, "can_cache", true, "can_df", true, "can_fast_zero", true, "can_flush", true,
				"can_fua", true, "can_multi_conn", true, "can_trim", true, "can_zero", true));
		assertThat(memExport.get("contexts").toString()).contains("base:allocation");
		assertThat(memExport.get("block_size_maximum").asLong()).isEqualTo(32L << 20);

		JsonNode diskExport = info("disk").get("exports").get(0);
		assertThat(diskExport.get("export-size").asLong()).isEqualTo(DISK_SIZE);
		// A sparse file: trim punches holes, zeroing (fast) with fallocate.
		assertThat(flags(diskExport)).containsExactlyInAnyOrderEntriesOf(Map.of("is_read_only", false,
				"is_rotational", false, "can_cache", true, "can_df", true, "can_fast_zero", true, "can_flush", true,
				"can_fua", true, "can_multi_conn", true, "can_trim", true, "can_zero", true));

		JsonNode scratchExport = info("scratch").get("exports").get(0);
		assertThat(scratchExport.get("export-size").asLong()).isEqualTo(64L << 20);
		assertThat(flags(scratchExport)).containsExactlyInAnyOrderEntriesOf(Map.of("is_read_only", false,
				"is_rotational", false, "can_cache", false, "can_df", true, "can_fast_zero", false, "can_flush", true,
				"can_fua", true, "can_multi_conn", true, "can_trim", false, "can_zero", true));
	}

	@Test
	void nbdinfoListsTheExports() {
		ExternalTool.require("nbdinfo");
		JsonNode list = json.readTree(run("nbdinfo", "--list", "--json", uri("")).stdout());
		List<String> names = new ArrayList<>();
		list.get("exports").forEach(e -> names.add(e.get("export-name").asString()));
		assertThat(names).containsExactlyInAnyOrder("mem", "disk", "scratch");
		assertThat(run("nbdinfo", "--list", uri("")).stdout()).contains("export=\"mem\"", "export=\"disk\"",
				"export=\"scratch\"", "description: 1 GiB sparse in-memory disk");
		// An unknown export is an error, not a hang.
		Result unknown = Processes.run(TIMEOUT, "nbdinfo", uri("nope"));
		assertThat(unknown.exitCode()).isNotZero();
	}

	@Test
	void nbdClientListsTheExports() {
		// The Linux userspace client's negotiation (LIST then ABORT); attaching needs the kernel module.
		Path nbdClient = ExternalTool.require("nbd-client");
		String out = run(nbdClient.toString(), "-l", "127.0.0.1", String.valueOf(this.port)).stdout();
		assertThat(out).contains("mem: 1 GiB sparse in-memory disk", "disk: ", "scratch: ");
	}

	@Test
	void nbdshEveryCommand() {
		nbdsh("mem", """
				base = 256 * 1024 * 1024
				assert h.get_size() == %d
				assert h.get_structured_replies_negotiated()
				assert h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
				for can in (h.can_flush, h.can_fua, h.can_trim, h.can_zero, h.can_fast_zero, h.can_cache,
				            h.can_multi_conn, h.can_df):
				    assert can(), can
				buf = bytes(range(256)) * 256
				h.pwrite(buf, base)
				h.pwrite(buf, base + 65536, nbd.CMD_FLAG_FUA)
				h.flush()
				assert h.pread(131072, base) == buf + buf
				h.cache(131072, base)
				h.zero(4096, base, nbd.CMD_FLAG_NO_HOLE)
				h.zero(4096, base + 65536, nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_FUA)
				h.trim(65536 - 8192, base + 8192)
				expected = bytes(4096) + buf[4096:8192] + bytes(65536 - 8192) + bytes(4096) + buf[4096:]
				assert h.pread(131072, base) == expected
				chunks = []
				def chunk(sub, offset, status, err):
				    chunks.append((offset - base, len(sub), status))
				    return 0
				assert h.pread_structured(131072, base, chunk) == expected
				assert chunks == [(0, 4096, nbd.READ_HOLE), (4096, 4096, nbd.READ_DATA),
				                  (8192, 61440, nbd.READ_HOLE), (69632, 61440, nbd.READ_DATA)], chunks
				chunks.clear()
				assert h.pread_structured(131072, base, chunk, nbd.CMD_FLAG_DF) == expected
				assert chunks == [(0, 131072, nbd.READ_DATA)], chunks
				entries = []
				def extents(context, offset, e, err):
				    assert context == nbd.CONTEXT_BASE_ALLOCATION
				    entries.append((offset, list(e)))
				h.block_status(262144, base, extents)
				hole = nbd.STATE_HOLE | nbd.STATE_ZERO
				# The NO_HOLE zero left its page allocated: zeroes, not a hole.
				zero = nbd.STATE_ZERO
				assert entries == [(base, [4096, zero, 4096, 0, 61440, hole, 61440, 0, 131072, hole])], entries
				entries.clear()
				h.block_status(262144, base, extents, nbd.CMD_FLAG_REQ_ONE)
				assert entries == [(base, [4096, zero])], entries
				h.shutdown()
				print("OK")
				""".formatted(MEM_SIZE));
	}

	@Test
	void nbdshManyRequestsInFlightCompleteWithTheirOwnData() {
		// On the file export requests run on worker threads, so completions may come out of order.
		nbdsh("disk", """
				import os
				n, size = 128, 65536
				data = [os.urandom(size) for i in range(n)]
				done = []
				def completed(i, err):
				    assert err.value == 0, (i, err.value)
				    done.append(i)
				    return 1
				for i in range(n):
				    h.aio_pwrite(data[i], i * size, completion=lambda err, i=i: completed(i, err))
				assert h.aio_in_flight() == n, h.aio_in_flight()
				while h.aio_in_flight() > 0:
				    h.poll(-1)
				assert sorted(done) == list(range(n))
				done.clear()
				bufs = [nbd.Buffer(size) for i in range(n)]
				for i in reversed(range(n)):
				    h.aio_pread(bufs[i], i * size, completion=lambda err, i=i: completed(i, err))
				assert h.aio_in_flight() >= 100
				while h.aio_in_flight() > 0:
				    h.poll(-1)
				assert sorted(done) == list(range(n))
				for i in range(n):
				    assert bufs[i].to_bytearray() == data[i], i
				print("completion order differs from submission order:", done != list(reversed(range(n))))
				h.flush()
				h.shutdown()
				print("OK")
				""");
	}

	@Test
	void nbdshWithoutClientSideChecksGetsTheServersErrors() {
		nbdsh("disk", """
				h.set_strict_mode(0)
				def expect(name, f):
				    try:
				        f()
				    except nbd.Error as e:
				        assert e.errno == name, (name, e.errno, e.string)
				        return
				    raise AssertionError("no error, expected " + name)
				size = h.get_size()
				maximum = h.get_block_size(nbd.SIZE_MAXIMUM)
				assert maximum == 32 * 1024 * 1024, maximum
				expect("EINVAL", lambda: h.pread(512, size - 256))
				expect("EINVAL", lambda: h.pread(1, size))
				expect("ENOSPC", lambda: h.pwrite(b"x" * 512, size - 256))
				expect("EINVAL", lambda: h.trim(4096, size - 2048))
				expect("ENOSPC", lambda: h.zero(4096, size - 2048, nbd.CMD_FLAG_FAST_ZERO))
				expect("EINVAL", lambda: h.pread(512, 0, nbd.CMD_FLAG_REQ_ONE))
				expect("EINVAL", lambda: h.pread(maximum + 1, 0))
				h.pwrite(b"\\x5a" * 4096, 0)
				# The server discards an oversized payload and answers it; the stream stays in sync.
				expect("EINVAL", lambda: h.pwrite(b"\\x01" * (maximum + 4096), 0))
				assert h.pread(4096, 0) == b"\\x5a" * 4096
				h.shutdown()
				print("OK")
				""");
	}

	@Test
	void nbdcopyRoundTripOnMemAndDisk() throws Exception {
		ExternalTool.require("nbdcopy");
		for (String export : new String[] { "mem", "disk" }) {
			long size = export.equals("mem") ? MEM_SIZE : DISK_SIZE;
			Path source = sparseRandomImage(dir.resolve(export + "-src.img"), size, 1);
			Path back = dir.resolve(export + "-back.img");
			run("nbdcopy", "--flush", source.toString(), uri(export));
			run("nbdcopy", uri(export), back.toString());
			assertThat(Files.size(back)).isEqualTo(size);
			assertThat(sha256(back)).as("sha256 of %s after the round trip", export)
				.isEqualTo(sparseRandomImageSha256(size, 1));
			Files.delete(source);
			Files.delete(back);
		}
	}

	@Test
	void qemuImgConvertCompareAndMapHoles() throws Exception {
		ExternalTool.require("qemu-img");
		ExternalTool.require("qemu-io");
		ExternalTool.require("nbdinfo");
		Path source = sparseRandomImage(dir.resolve("qemu-src.img"), MEM_SIZE, 2);
		// 16 parallel coroutines with out-of-order writes (-W).
		run("qemu-img", "convert", "-n", "-m", "16", "-W", "-f", "raw", "-O", "raw", source.toString(), uri("mem"));
		assertThat(run("qemu-img", "compare", "-f", "raw", "-F", "raw", source.toString(), uri("mem")).stdout())
			.contains("Images are identical");
		// Comparison is not blind: a changed byte is found.
		run("qemu-io", "-f", "raw", uri("mem"), "-c", "write -P 0x1 1000M 4k");
		Result differs = Processes.run(TIMEOUT, "qemu-img", "compare", "-f", "raw", "-F", "raw", source.toString(),
				uri("mem"));
		assertThat(differs.exitCode()).isEqualTo(1);
		// Without -u, qemu asks for zeroes with NO_HOLE: the page stays allocated, as zeroes.
		run("qemu-io", "-f", "raw", uri("mem"), "-c", "write -z 1000M 4k");

		JsonNode map = json.readTree(run("qemu-img", "map", "--output=json", "-f", "raw", uri("mem")).stdout());
		TreeMap<Long, Long> data = new TreeMap<>();
		TreeMap<Long, Long> zeroData = new TreeMap<>();
		long holes = 0;
		long covered = 0;
		for (JsonNode extent : map) {
			long start = extent.get("start").asLong();
			long length = extent.get("length").asLong();
			covered += length;
			if (extent.get("data").asBoolean() && extent.get("zero").asBoolean()) {
				zeroData.put(start, length);
			}
			else if (extent.get("data").asBoolean()) {
				data.put(start, length);
			}
			else {
				assertThat(extent.get("zero").asBoolean()).isTrue();
				holes += length;
			}
		}
		assertThat(covered).isEqualTo(MEM_SIZE);
		// Only the random regions hold data, and the zeroed page allocated zeroes; the rest of the
		// gigabyte is reported as holes.
		assertThat(data).isEqualTo(new TreeMap<>(Map.of(0L, 8L << 20, MEM_SIZE / 2, 2L << 20)));
		assertThat(zeroData).isEqualTo(new TreeMap<>(Map.of(1000L << 20, 4096L)));
		assertThat(holes).isEqualTo(MEM_SIZE - (10L << 20) - 4096);
		// libnbd sees the same allocation.
		List<String> nbdMap = run("nbdinfo", "--map", uri("mem")).stdout()
			.lines()
			.map(line -> line.trim().replaceAll("\\s+", " "))
			.toList();
		assertThat(nbdMap).contains("0 8388608 0 data", "8388608 528482304 3 hole,zero", "536870912 2097152 0 data");
		Files.delete(source);
	}

	@Test
	void qemuIoPatterns() {
		ExternalTool.require("qemu-io");
		for (String export : new String[] { "mem", "disk" }) {
			String out = run("qemu-io", "-f", "raw", uri(export), "-c", "write -P 0xab 16M 1M", "-c",
					"read -P 0xab 16M 1M", "-c", "write -z 16M 4k", "-c", "read -P 0 16M 4k", "-c",
					"read -P 0xab 17404k 4k", "-c", "aio_write -P 0xcd 20M 64k", "-c", "aio_flush", "-c",
					"read -P 0xcd 20M 64k", "-c", "flush")
				.stdout();
			assertThat(out).doesNotContain("verification failed", "error", "failed");
			assertThat(out).contains("wrote 1048576/1048576 bytes at offset 16777216",
					"read 1048576/1048576 bytes at offset 16777216", "read 65536/65536 bytes at offset 20971520");
			// The pattern check can fail: a wrong pattern is reported.
			Result wrong = Processes.run(TIMEOUT, "qemu-io", "-f", "raw", uri(export), "-c", "read -P 0x11 16M 4k");
			assertThat(wrong.stdout() + wrong.stderr()).contains("Pattern verification failed");
		}
	}

	private String uri(String export) {
		return "nbd://127.0.0.1:" + this.port + "/" + export;
	}

	private JsonNode info(String export) {
		return json.readTree(run("nbdinfo", "--no-content", "--json", uri(export)).stdout());
	}

	private static Map<String, Boolean> flags(JsonNode export) {
		Map<String, Boolean> flags = new TreeMap<>();
		for (String name : export.propertyNames()) {
			if (name.startsWith("can_") || name.startsWith("is_")) {
				flags.put(name, export.get(name).asBoolean());
			}
		}
		return flags;
	}

	/** Runs a Python script in nbdsh connected (with base:allocation) to {@code export}. */
	private void nbdsh(String export, String script) {
		Result r = Libnbd.nbdsh(TIMEOUT, uri(export), script, "--base-allocation").assertSuccess();
		assertThat(r.stdout()).as(r.stderr()).contains("OK");
	}

	private static Result run(String... command) {
		return Processes.run(TIMEOUT, command).assertSuccess();
	}

	/** A sparse raw image of {@code size} with random data in its first 8 MiB and 2 MiB in the middle. */
	private static Path sparseRandomImage(Path path, long size, long seed) throws IOException {
		Random random = new Random(seed);
		try (FileChannel ch = FileChannel.open(path, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
				StandardOpenOption.TRUNCATE_EXISTING, StandardOpenOption.SPARSE)) {
			byte[] block = new byte[1 << 20];
			for (int i = 0; i < 8; i++) {
				random.nextBytes(block);
				ch.write(ByteBuffer.wrap(block), (long) i << 20);
			}
			for (int i = 0; i < 2; i++) {
				random.nextBytes(block);
				ch.write(ByteBuffer.wrap(block), size / 2 + ((long) i << 20));
			}
			ch.truncate(size);
			if (ch.size() < size) {
				ch.write(ByteBuffer.wrap(new byte[1]), size - 1);
			}
		}
		return path;
	}

	/** The sha256 of what {@link #sparseRandomImage} writes, computed without reading the file back. */
	private static String sparseRandomImageSha256(long size, long seed) throws Exception {
		MessageDigest digest = MessageDigest.getInstance("SHA-256");
		Random random = new Random(seed);
		byte[] block = new byte[1 << 20];
		byte[] middle = new byte[2 << 20];
		for (int i = 0; i < 8; i++) {
			random.nextBytes(block);
			digest.update(block);
		}
		random.nextBytes(block);
		System.arraycopy(block, 0, middle, 0, block.length);
		random.nextBytes(block);
		System.arraycopy(block, 0, middle, block.length, block.length);
		byte[] zeroes = new byte[1 << 20];
		for (long pos = 8 << 20; pos < size; pos += zeroes.length) {
			if (pos == size / 2) {
				digest.update(middle);
				pos += middle.length - zeroes.length;
			}
			else {
				digest.update(zeroes);
			}
		}
		return HexFormat.of().formatHex(digest.digest());
	}

	private static String sha256(Path file) throws Exception {
		MessageDigest digest = MessageDigest.getInstance("SHA-256");
		byte[] buf = new byte[1 << 20];
		try (InputStream in = Files.newInputStream(file)) {
			int n;
			while ((n = in.read(buf)) > 0) {
				digest.update(buf, 0, n);
			}
		}
		return HexFormat.of().formatHex(digest.digest());
	}

}
