package dev.nbd.sample;

import java.nio.file.Path;
import java.time.Duration;
import java.util.List;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import dev.nbd.sample.support.SampleAppProcess;
import dev.nbd.testsupport.ActuatorClient;
import dev.nbd.testsupport.Libnbd;
import dev.nbd.testsupport.Processes;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * A memory export holds its size whatever the JVM's limits: the sample app's 1 GiB {@code mem}
 * export, in a JVM started with {@code -Xmx256m} (so 256 MiB of direct memory), takes a pattern
 * across all of it and reads it back; meanwhile and afterwards the {@code disk} export, new
 * connections included, is served as before. A heap this small puts Netty's default buffer
 * allocator in its low-memory mode, so the server's connections get the pooled one.
 */
class MemoryExportIT {

	/**
	 * Fills every MiB of {@code mem} with a pattern naming its block, checks the disk export
	 * while {@code mem} is full (on a connection opened before and one opened after), then
	 * reads {@code mem} back. Prints "ok" at the end; any failure is an exception.
	 */
	private static final String CLIENT = """
			import nbd, os, sys
			mem_uri, disk_uri = sys.argv[1], sys.argv[2]
			M = 1 << 20
			pattern = bytes(range(1, 256)) * (M // 255 + 1)
			def block(i):
			    return i.to_bytes(8, 'little') + pattern[8:M]
			def check_disk(h, at):
			    data = os.urandom(4 * M)
			    h.pwrite(data, at)
			    assert h.pread(len(data), at) == data, 'disk data differs at %d' % at
			disk = nbd.NBD(); disk.connect_uri(disk_uri)
			mem = nbd.NBD(); mem.connect_uri(mem_uri)
			size = mem.get_size()
			assert size == 1 << 30, size
			for i in range(size // M):
			    mem.pwrite(block(i), i * M)
			    if i % 256 == 255:
			        check_disk(disk, (i // 256) * 4 * M)
			print('written', size, flush=True)
			late = nbd.NBD(); late.connect_uri(disk_uri)
			check_disk(late, 64 * M)
			check_disk(disk, 128 * M)
			for i in range(size // M):
			    got = mem.pread(M, i * M)
			    assert got == block(i), 'mem block %d differs' % i
			print('ok', flush=True)
			""";

	@TempDir
	Path data;

	@Test
	void oneGibMemoryExportHoldsOneGibUnderXmx256mAndTheDiskExportIsServedMeanwhile() {
		try (SampleAppProcess app = SampleAppProcess.startWithJvmOptions(this.data, List.of("-Xmx256m"))) {
			Processes.Result result = Libnbd.python(Duration.ofMinutes(5), CLIENT, app.uri("mem"), app.uri("disk"));
			assertThat(result.exitCode()).as("client\nstdout:\n%s\nstderr:\n%s\napp log:\n%s", result.stdout(),
					result.stderr(), app.log())
				.isZero();
			assertThat(result.stdout()).contains("written 1073741824", "ok");
			assertThat(app.log()).doesNotContain("is full", "ENOSPC");
			// Netty's default allocator pools nothing above 16 KiB in a heap this small.
			assertThat(app.log()).contains("NBD connections use Netty's pooled buffer allocator");
			assertThat(new ActuatorClient(app.httpPort()).getOk("/actuator/prometheus"))
				.contains("netty_allocator_memory_used", "allocator_type=\"PooledByteBufAllocator\"");
		}
	}

}
