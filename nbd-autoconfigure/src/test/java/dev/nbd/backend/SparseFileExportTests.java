package dev.nbd.backend;

import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.io.TempDir;

import dev.nbd.server.NbdServer;
import dev.nbd.testsupport.ExternalTool;
import dev.nbd.testsupport.NbdServerExtension;
import dev.nbd.testsupport.Processes;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * A sparse file export against libnbd and qemu: holes in {@code nbdinfo --map}, TRIM and
 * WRITE_ZEROES (with and without NO_HOLE) changing the file's allocation as {@code stat}
 * counts it, FAST_ZERO advertised and answered, {@code qemu-img convert} writing a sparse copy.
 */
class SparseFileExportTests {

	private static final long GIB = 1L << 30;

	private static final long MIB = 1L << 20;

	private static final Duration TIMEOUT = Duration.ofSeconds(120);

	@TempDir
	Path dir;

	private Path file;

	private FileBackend backend;

	@RegisterExtension
	final NbdServerExtension servers = new NbdServerExtension();

	private NbdServer server;

	@BeforeEach
	void start() throws Exception {
		this.file = this.dir.resolve("disk.img");
		// 1 GiB holding 2 MiB of data: 1 MiB at the start, 1 MiB at 512 MiB.
		this.backend = this.servers.closeAfter(new FileBackend("disk", this.file, GIB, null, false));
		this.backend.write(0, ByteBuffer.wrap(bytes(MIB, (byte) 0x5a)), false);
		this.backend.write(512 * MIB, ByteBuffer.wrap(bytes(MIB, (byte) 0xa5)), false);
		this.server = this.servers.start(this.backend);
	}

	@Test
	void nbdinfoMapShowsTheHolesAndTheFlags() {
		ExternalTool.require("nbdinfo");
		List<String> map = run("nbdinfo", "--map", uri()).stdout()
			.lines()
			.map((line) -> line.trim().replaceAll("\\s+", " "))
			.toList();
		assertThat(map).containsExactly("0 1048576 0 data", "1048576 535822336 3 hole,zero",
				"536870912 1048576 0 data", "537919488 535822336 3 hole,zero");
		String info = run("nbdinfo", uri()).stdout();
		assertThat(info).contains("can_trim: true", "can_zero: true", "can_fast_zero: true", "can_fua: true",
				"can_multi_conn: true");
	}

	@Test
	void trimAndWriteZeroesFreeOrKeepBlocksAndFastZeroIsAnswered() {
		long before = allocated();
		assertThat(before).isGreaterThanOrEqualTo(2 * MIB);
		nbdsh("""
				M = 1024 * 1024
				assert h.can_trim() and h.can_zero() and h.can_fast_zero()
				for i in range(2):
				    h.pwrite(b"\\x11" * (32 * M), 128 * M + i * 32 * M)
				h.flush()
				print("written", stat())
				h.trim(64 * M, 128 * M)
				assert h.pread(4096, 128 * M) == bytes(4096)
				print("trimmed", stat())
				for i in range(2):
				    h.pwrite(b"\\x22" * (32 * M), 256 * M + i * 32 * M)
				h.zero(64 * M, 256 * M, nbd.CMD_FLAG_NO_HOLE | nbd.CMD_FLAG_FAST_ZERO)
				assert h.pread(M, 256 * M) == bytes(M)
				print("zeroed-no-hole", stat())
				h.zero(64 * M, 256 * M, nbd.CMD_FLAG_FUA)
				assert h.pread(M, 300 * M) == bytes(M)
				print("zeroed", stat())
				h.shutdown()
				print("OK")
				""");
	}

	@Test
	void fastZeroThatCannotBeFastIsRefusedWithoutTouchingTheData() {
		// As on a filesystem with punch hole but neither zero range nor allocation.
		this.backend.disable("zero-range", "test");
		this.backend.disable("allocate", "test");
		nbdsh("""
				M = 1024 * 1024
				try:
				    h.zero(M, 0, nbd.CMD_FLAG_NO_HOLE | nbd.CMD_FLAG_FAST_ZERO)
				    raise AssertionError("no error")
				except nbd.Error as e:
				    assert e.errno == "ENOTSUP", e.errno
				assert h.pread(M, 0) == b"\\x5a" * M
				# Allowed to punch: fast again.
				h.zero(M, 0, nbd.CMD_FLAG_FAST_ZERO)
				assert h.pread(M, 0) == bytes(M)
				h.shutdown()
				print("OK")
				""");
	}

	@Test
	void qemuImgConvertWritesASparseCopy() throws Exception {
		ExternalTool.require("qemu-img");
		Path copy = this.dir.resolve("copy.img");
		run("qemu-img", "convert", "-f", "raw", "-O", "raw", uri(), copy.toString());
		run("qemu-img", "compare", "-f", "raw", "-F", "raw", copy.toString(), uri());
		assertThat(java.nio.file.Files.size(copy)).isEqualTo(GIB);
		assertThat(allocated(copy)).isLessThanOrEqualTo(4 * MIB);
		String map = run("qemu-img", "map", "--output=json", "-f", "raw", uri()).stdout();
		assertThat(map).contains("\"start\": 1048576, \"length\": 535822336, \"depth\": 0, \"present\": true, \"zero\": true, \"data\": false");
	}

	/** Runs an nbdsh script with {@code stat()} giving the file's allocated bytes; checks each step's. */
	private void nbdsh(String script) {
		ExternalTool.require("nbdsh");
		String prelude = """
				import os
				def stat():
				    return os.stat(%s).st_blocks * 512
				""".formatted("'" + this.file + "'");
		Processes.Result r = run("nbdsh", "-u", uri(), "-c", prelude + script);
		assertThat(r.stdout()).as(r.stderr()).contains("OK");
		Map<String, Long> at = new java.util.HashMap<>();
		r.stdout().lines().filter((l) -> l.contains(" ")).forEach((l) -> {
			String[] f = l.split(" ");
			at.put(f[0], Long.parseLong(f[1]));
		});
		if (at.containsKey("written")) {
			// TRIM of 64 MiB frees 64 MiB; zeroing with NO_HOLE keeps the blocks, without it frees them.
			// (Give or take the filesystem's own blocks: splitting extents can take an extent-tree block.)
			long slack = 64 * 1024;
			assertThat(at.get("trimmed")).isLessThanOrEqualTo(at.get("written") - 64 * MIB + slack);
			assertThat(at.get("zeroed-no-hole")).isGreaterThanOrEqualTo(at.get("trimmed") + 64 * MIB - slack);
			assertThat(at.get("zeroed")).isLessThanOrEqualTo(at.get("zeroed-no-hole") - 64 * MIB + slack);
		}
	}

	private long allocated() {
		return allocated(this.file);
	}

	private static long allocated(Path file) {
		String[] f = run("stat", "-c", "%b %B", file.toString()).stdout().trim().split(" ");
		return Long.parseLong(f[0]) * Long.parseLong(f[1]);
	}

	private String uri() {
		return "nbd://127.0.0.1:" + this.server.port() + "/disk";
	}

	private static byte[] bytes(long n, byte value) {
		byte[] b = new byte[(int) n];
		java.util.Arrays.fill(b, value);
		return b;
	}

	private static Processes.Result run(String... command) {
		return Processes.run(TIMEOUT, command).assertSuccess();
	}

}
