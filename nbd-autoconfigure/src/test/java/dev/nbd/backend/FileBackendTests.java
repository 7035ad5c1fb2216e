package dev.nbd.backend;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import dev.nbd.protocol.NbdError;
import dev.nbd.testsupport.Processes;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatExceptionOfType;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * The file backend keeps files sparse: extents from SEEK_DATA/SEEK_HOLE, trim and zeroing with
 * fallocate, checked against the file's allocated blocks as {@code stat} reports them, on the
 * disk's filesystem and on tmpfs (no FALLOC_FL_ZERO_RANGE there, so NO_HOLE takes punch then
 * allocate).
 */
class FileBackendTests {

	private static final long MIB = 1 << 20;

	@TempDir
	Path dir;

	/** The test's temporary directory (a disk filesystem) and /dev/shm (tmpfs) where present. */
	static Stream<String> filesystems() {
		return Files.isDirectory(Path.of("/dev/shm")) && Files.isWritable(Path.of("/dev/shm"))
				? Stream.of("disk", "tmpfs") : Stream.of("disk");
	}

	private Path file(String filesystem, String name) throws IOException {
		if (filesystem.equals("tmpfs")) {
			Path shm = Files.createTempDirectory(Path.of("/dev/shm"), "nbd-test-");
			shm.toFile().deleteOnExit();
			Path file = shm.resolve(name);
			file.toFile().deleteOnExit();
			return file;
		}
		return this.dir.resolve(name);
	}

	@Test
	void extentsOfATebibyteFileWithTwoDataRegionsAreFourExtents() throws Exception {
		assumeSparseCalls();
		Path file = this.dir.resolve("big.img");
		try (FileBackend backend = new FileBackend("big", file, 1L << 40, null, false)) {
			assertThat(backend.canExtents()).isTrue();
			assertThat(allocated(file)).isZero();
			backend.write(0, random(2 * MIB), false);
			backend.write(512L << 30, random(4096), false);
			List<long[]> extents = extents(backend, 0, 1L << 40);
			assertThat(extents).containsExactly(new long[] { 2 * MIB, 0 },
					new long[] { (512L << 30) - 2 * MIB, ExportBackend.HOLE | ExportBackend.ZERO },
					new long[] { 4096, 0 },
					new long[] { (512L << 30) - 4096, ExportBackend.HOLE | ExportBackend.ZERO });
			// A range inside one hole, and one starting inside data.
			assertThat(extents(backend, 4 * MIB, MIB)).containsExactly(new long[] { MIB, 3 });
			assertThat(extents(backend, MIB, 2 * MIB)).containsExactly(new long[] { MIB, 0 }, new long[] { MIB, 3 });
		}
	}

	@ParameterizedTest
	@MethodSource("filesystems")
	void trimPunchesHolesAndTheFileShrinks(String filesystem) throws Exception {
		assumeSparseCalls();
		Path file = file(filesystem, "trim.img");
		try (FileBackend backend = new FileBackend("t", file, 128 * MIB, null, false)) {
			assertThat(backend.canTrim()).isTrue();
			backend.write(0, random(64 * MIB), false);
			assertThat(allocated(file)).isGreaterThanOrEqualTo(64 * MIB);
			backend.trim(0, 64 * MIB, false);
			assertThat(allocated(file)).isLessThan(MIB);
			assertThat(read(backend, 0, 4096)).isEqualTo(new byte[4096]);
			assertThat(extents(backend, 0, 128 * MIB)).containsExactly(new long[] { 128 * MIB, 3 });
		}
	}

	@ParameterizedTest
	@MethodSource("filesystems")
	void zeroesKeepTheRangeAllocatedOnlyWithNoHole(String filesystem) throws Exception {
		assumeSparseCalls();
		Path file = file(filesystem, "zero.img");
		try (FileBackend backend = new FileBackend("z", file, 128 * MIB, null, false)) {
			assertThat(backend.canZero()).isTrue();
			assertThat(backend.canFastZero()).isTrue();
			backend.write(0, random(64 * MIB), false);
			long before = allocated(file);
			// NO_HOLE (mayTrim false), asked to be fast: zeroes, allocation kept.
			backend.zero(MIB, 32 * MIB, false, true, false);
			assertThat(read(backend, MIB, 4096)).isEqualTo(new byte[4096]);
			assertThat(read(backend, 33 * MIB - 4096, 4096)).isEqualTo(new byte[4096]);
			assertThat(read(backend, 33 * MIB, 1)).isNotEqualTo(new byte[1]);
			// All kept, give or take an extent-tree block of the filesystem's.
			assertThat(allocated(file)).isGreaterThanOrEqualTo(before - 64 * 1024);
			// Without NO_HOLE the range is punched out.
			backend.zero(0, 64 * MIB, true, true, true);
			assertThat(read(backend, 33 * MIB, 4096)).isEqualTo(new byte[4096]);
			assertThat(allocated(file)).isLessThan(MIB);
			assertThat(backend.details()).containsEntry("fastZero", true)
				.containsEntry("zeroNoHole", filesystem.equals("tmpfs") ? "fallocate PUNCH_HOLE then allocate"
						: "fallocate ZERO_RANGE");
		}
	}

	@Test
	void fastZeroWithNoFastWayLeftIsRefusedBeforeAnyWork() throws Exception {
		assumeSparseCalls();
		Path file = this.dir.resolve("slow.img");
		try (FileBackend backend = new FileBackend("s", file, 16 * MIB, null, false)) {
			ByteBuffer data = random(8 * MIB);
			backend.write(0, data.duplicate(), false);
			backend.disable("zero-range", "test");
			backend.disable("allocate", "test");
			assertThatExceptionOfType(NbdBackendException.class)
				.isThrownBy(() -> backend.zero(0, 8 * MIB, false, true, false))
				.satisfies((ex) -> assertThat(ex.error()).isEqualTo(NbdError.ENOTSUP));
			assertThat(read(backend, 0, 8 << 20)).isEqualTo(data.array());
			// Not asked to be fast: zeroes written, allocation kept.
			backend.zero(0, 8 * MIB, false, false, false);
			assertThat(read(backend, 0, 8 << 20)).isEqualTo(new byte[8 << 20]);
			assertThat(allocated(file)).isGreaterThanOrEqualTo(8 * MIB);
			assertThat(backend.details()).extractingByKey("fallback")
				.isEqualTo(Map.of("zero-range", "test", "allocate", "test"));
			assertThat(backend.details()).containsEntry("zeroNoHole", "writes zeroes");
		}
	}

	@Test
	void aShortFileIsExtendedWithoutAllocatingAndAReadOnlyOneReportsExtents() throws Exception {
		assumeSparseCalls();
		Path file = this.dir.resolve("grow.img");
		try (FileBackend backend = new FileBackend("g", file, 64 * MIB, null, false)) {
			assertThat(Files.size(file)).isEqualTo(64 * MIB);
			assertThat(allocated(file)).isZero();
			backend.write(MIB, random(MIB), true);
		}
		try (FileBackend backend = new FileBackend("g", file, -1, null, true)) {
			assertThat(backend.canExtents()).isTrue();
			assertThat(backend.canTrim()).isFalse();
			assertThat(backend.canZero()).isFalse();
			assertThat(backend.canFua()).isFalse();
			assertThat(extents(backend, 0, 64 * MIB)).containsExactly(new long[] { MIB, 3 }, new long[] { MIB, 0 },
					new long[] { 62 * MIB, 3 });
			assertThat(backend.details()).containsEntry("extents", "lseek SEEK_DATA/SEEK_HOLE")
				.extractingByKey("fallback")
				.isEqualTo(Map.of());
		}
	}

	private static void assumeSparseCalls() {
		assumeTrue(LinuxFileCalls.unavailable() == null, () -> "no sparse-file calls: " + LinuxFileCalls.unavailable());
	}

	/** Bytes allocated to the file, as {@code du} counts them. */
	static long allocated(Path file) {
		String out = Processes.run(Duration.ofSeconds(10), "stat", "-c", "%b %B", file.toString())
			.assertSuccess()
			.stdout()
			.trim();
		String[] f = out.split(" ");
		return Long.parseLong(f[0]) * Long.parseLong(f[1]);
	}

	private static List<long[]> extents(ExportBackend backend, long offset, long length) throws IOException {
		List<long[]> extents = new ArrayList<>();
		backend.extents(offset, length, (l, f) -> extents.add(new long[] { l, f }));
		return extents;
	}

	private static byte[] read(ExportBackend backend, long offset, int length) throws IOException {
		ByteBuffer buffer = ByteBuffer.allocate(length);
		backend.read(offset, buffer);
		return buffer.array();
	}

	private static ByteBuffer random(long length) {
		byte[] bytes = new byte[(int) length];
		new java.util.Random(length).nextBytes(bytes);
		return ByteBuffer.wrap(bytes);
	}

}
