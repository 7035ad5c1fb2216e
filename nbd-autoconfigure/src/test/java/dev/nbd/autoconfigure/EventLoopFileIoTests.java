package dev.nbd.autoconfigure;

import java.io.RandomAccessFile;
import java.nio.file.Path;
import java.util.Random;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.springframework.boot.autoconfigure.AutoConfigurations;
import org.springframework.boot.test.context.runner.ApplicationContextRunner;

import dev.nbd.protocol.NbdProtocol;
import dev.nbd.autoconfigure.actuate.NbdEndpoint;
import dev.nbd.server.EventLoopIo;
import dev.nbd.server.Export;
import dev.nbd.server.NbdServer;
import dev.nbd.testsupport.RawNbdClient;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * {@code nbd.exports.<name>.event-loop-io=true} (the mode the benchmark uses): reads and plain
 * writes run on the network threads; FLUSH still reaches the disk through a backend sync before
 * its reply, and FUA writes are made durable (natively, or by a sync) before theirs.
 */
class EventLoopFileIoTests {

	private static final int MIB = 1024 * 1024;

	@TempDir
	Path dir;

	@Test
	void writesFuaFlushAndReadsOnTheNetworkThreads() {
		Path image = this.dir.resolve("disk.img");
		new ApplicationContextRunner().withConfiguration(AutoConfigurations.of(NbdServerAutoConfiguration.class))
			.withPropertyValues("nbd.server.port=0", "nbd.exports.disk.type=file", "nbd.exports.disk.path=" + image,
					"nbd.exports.disk.size=16MB", "nbd.exports.disk.event-loop-io=true")
			.run((context) -> {
				NbdServer server = context.getBean(NbdServer.class);
				Export export = server.export("disk");
				assertThat(export.backend().servedFile()).as("the file is served from the network threads").isNotNull();
				Random random = new Random(17);
				byte[] small = new byte[4096];
				byte[] large = new byte[3 * MIB + 512];
				byte[] fua = new byte[8192];
				random.nextBytes(small);
				random.nextBytes(large);
				random.nextBytes(fua);
				try (RawNbdClient client = RawNbdClient.connect(server.port(), "disk")) {
					// Plain writes: small, and large enough to arrive in pieces.
					assertThat(client.call(NbdProtocol.CMD_WRITE, 4096, small.length, small).error()).isZero();
					assertThat(client.call(NbdProtocol.CMD_WRITE, 5 * MIB, large.length, large).error()).isZero();
					long syncs = export.backendSyncs();
					client.sendRequest(NbdProtocol.CMD_FLAG_FUA, NbdProtocol.CMD_WRITE, 99, 12 * MIB, fua.length, fua);
					assertThat(client.readSimpleReply().error()).isZero();
					// Native FUA (an O_DSYNC write, FlushDurabilityIT sees it under strace) or a sync after it.
					if (!export.backend().canFua()) {
						assertThat(export.backendSyncs()).as("a sync before the FUA reply").isGreaterThan(syncs);
					}
					syncs = export.backendSyncs();
					long flushes = export.flushRequests();
					assertThat(client.call(NbdProtocol.CMD_FLUSH, 0, 0, null).error()).isZero();
					assertThat(export.flushRequests()).isEqualTo(flushes + 1);
					assertThat(export.backendSyncs()).as("a sync before the FLUSH reply").isGreaterThan(syncs);
					// Reads: a small one (pread into the reply) and a large one (sendfile).
					assertThat(client.call(NbdProtocol.CMD_READ, 4096, small.length, null).data()).isEqualTo(small);
					assertThat(client.call(NbdProtocol.CMD_READ, 5 * MIB, large.length, null).data()).isEqualTo(large);
					assertThat(client.call(NbdProtocol.CMD_READ, 12 * MIB, fua.length, null).data()).isEqualTo(fua);
				}
				// Every write landed at its offset in the file itself.
				try (RandomAccessFile file = new RandomAccessFile(image.toFile(), "r")) {
					assertThat(read(file, 4096, small.length)).isEqualTo(small);
					assertThat(read(file, 5 * MIB, large.length)).isEqualTo(large);
					assertThat(read(file, 12 * MIB, fua.length)).isEqualTo(fua);
					assertThat(read(file, 0, 4096)).isEqualTo(new byte[4096]);
				}
			});
	}

	@Test
	void unsetIsAdaptiveTrueIsAlwaysFalseIsNever() {
		new ApplicationContextRunner().withConfiguration(AutoConfigurations.of(NbdServerAutoConfiguration.class))
			.withPropertyValues("nbd.server.port=0", "nbd.exports.adaptive.type=file",
					"nbd.exports.adaptive.path=" + this.dir.resolve("a.img"), "nbd.exports.adaptive.size=1MB",
					"nbd.exports.always.type=file", "nbd.exports.always.path=" + this.dir.resolve("b.img"),
					"nbd.exports.always.size=1MB", "nbd.exports.always.event-loop-io=true", "nbd.exports.never.type=file",
					"nbd.exports.never.path=" + this.dir.resolve("c.img"), "nbd.exports.never.size=1MB",
					"nbd.exports.never.event-loop-io=false")
			.run((context) -> {
				NbdServer server = context.getBean(NbdServer.class);
				assertThat(server.export("adaptive").fileIo().mode()).isEqualTo(EventLoopIo.ADAPTIVE);
				assertThat(server.export("always").fileIo().mode()).isEqualTo(EventLoopIo.ALWAYS);
				assertThat(server.export("never").fileIo()).isNull();
				assertThat(server.export("never").backend().servedFile()).isNull();
				NbdEndpoint endpoint = new NbdEndpoint(server);
				assertThat(endpoint.export("adaptive").fileIo())
					.isEqualTo(new NbdEndpoint.FileIoDescriptor("adaptive", true, 0));
				assertThat(endpoint.export("always").fileIo().mode()).isEqualTo("always");
				assertThat(endpoint.export("never").fileIo()).isNull();
			});
	}

	private static byte[] read(RandomAccessFile file, long offset, int length) throws java.io.IOException {
		byte[] bytes = new byte[length];
		file.seek(offset);
		file.readFully(bytes);
		return bytes;
	}

}
