package dev.nbd.autoconfigure;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;

import org.junit.jupiter.api.Test;
import org.springframework.boot.autoconfigure.AutoConfigurations;
import org.springframework.boot.autoconfigure.ssl.SslAutoConfiguration;
import org.springframework.boot.test.context.runner.ApplicationContextRunner;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;

import dev.nbd.backend.ExportBackend;
import dev.nbd.backend.MemoryBackend;
import dev.nbd.protocol.NbdError;
import dev.nbd.protocol.NbdProtocol;
import dev.nbd.server.Export;
import dev.nbd.server.MultiConnMode;
import dev.nbd.server.NbdServer;
import dev.nbd.testsupport.Libnbd;
import dev.nbd.testsupport.Processes;
import dev.nbd.testsupport.RawNbdClient.OptionReply;
import dev.nbd.testsupport.RawNbdClient;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * {@code nbd.exports.<name>.*} policy keys apply to an {@link ExportBackend} bean exactly as to
 * an export made from properties: the server enforces them above the backend.
 */
class BeanExportPolicyTests {

	private final ApplicationContextRunner runner = new ApplicationContextRunner()
		.withConfiguration(AutoConfigurations.of(NbdServerAutoConfiguration.class, SslAutoConfiguration.class))
		.withPropertyValues("nbd.server.port=0")
		.withUserConfiguration(Beans.class);

	@Test
	void readOnlyBeanExportRefusesWritesWithEpermAndAdvertisesReadOnly() {
		this.runner.withPropertyValues("nbd.exports.vault.read-only=true").run((context) -> {
			NbdServer server = context.getBean(NbdServer.class);
			MemoryBackend vault = context.getBean("vault", MemoryBackend.class);
			assertThat(vault.isReadOnly()).as("the bean itself is writable").isFalse();
			try (RawNbdClient client = RawNbdClient.connect(server.port(), "vault")) {
				int flags = client.export().flags();
				assertThat(flags & NbdProtocol.TFLAG_READ_ONLY).isNotZero();
				assertThat(flags & (NbdProtocol.TFLAG_SEND_TRIM | NbdProtocol.TFLAG_SEND_WRITE_ZEROES
						| NbdProtocol.TFLAG_SEND_FLUSH)).isZero();
				RawNbdClient.Reply reply = client.call(NbdProtocol.CMD_WRITE, 0, 4096, new byte[4096]);
				assertThat(reply.error()).isEqualTo(NbdError.EPERM.code());
				reply = client.call(NbdProtocol.CMD_READ, 0, 4096, null);
				assertThat(reply.error()).isZero();
			}
			// Nothing reached the backend.
			ByteBuffer first = ByteBuffer.allocate(1);
			vault.read(0, first);
			assertThat(first.get(0)).isEqualTo((byte) 7);
		});
	}

	@Test
	void libnbdSeesAReadOnlyBeanExportAndGetsEpermForAWrite() {
		Libnbd.require();
		this.runner
			.withPropertyValues("nbd.exports.vault.read-only=true", "nbd.exports.vault.description=the vault",
					"nbd.exports.vault.minimum-block-size=512B")
			.run((context) -> {
				String script = """
						import errno
						h = nbd.NBD()
						h.set_full_info(True)
						h.connect_uri("nbd://127.0.0.1:%d/vault")
						assert h.is_read_only(), "READ_ONLY not advertised"
						assert h.get_export_description() == "the vault", h.get_export_description()
						assert h.get_block_size(nbd.SIZE_MINIMUM) == 512
						# Let the write reach the server: libnbd would refuse it itself.
						h.set_strict_mode(0)
						try:
						    h.pwrite(b"x" * 512, 0)
						    raise AssertionError("write accepted")
						except nbd.Error as e:
						    assert e.errnum == errno.EPERM, e
						assert h.pread(512, 0)[0] == 7
						h.shutdown()
						print("OK")
						""".formatted(context.getBean(NbdServer.class).port());
				Processes.Result result = Libnbd.nbdsh(Duration.ofSeconds(60), null, script).assertSuccess();
				assertThat(result.stdout()).contains("OK");
			});
	}

	@Test
	void descriptionAndBlockSizesOfABeanExportAreAdvertised() {
		this.runner
			.withPropertyValues("nbd.exports.vault.description=the vault", "nbd.exports.vault.minimum-block-size=512B",
					"nbd.exports.vault.preferred-block-size=64KB")
			.run((context) -> {
				NbdServer server = context.getBean(NbdServer.class);
				try (RawNbdClient client = RawNbdClient.connect(server.port())) {
					client.handshake();
					List<OptionReply> list = client.replies(NbdProtocol.OPT_LIST, new byte[0]);
					assertThat(list).anySatisfy((r) -> assertThat(new String(r.data(), StandardCharsets.UTF_8))
						.endsWith("vaultthe vault"));
					List<OptionReply> go = client.replies(NbdProtocol.OPT_GO, RawNbdClient.infoData("vault",
							NbdProtocol.INFO_DESCRIPTION, NbdProtocol.INFO_BLOCK_SIZE));
					ByteBuffer description = info(go, NbdProtocol.INFO_DESCRIPTION);
					assertThat(StandardCharsets.UTF_8.decode(description).toString()).isEqualTo("the vault");
					ByteBuffer sizes = info(go, NbdProtocol.INFO_BLOCK_SIZE);
					assertThat(sizes.getInt()).isEqualTo(512);
					assertThat(sizes.getInt()).isEqualTo(64 * 1024);
					assertThat(sizes.getInt()).isEqualTo(32 * 1024 * 1024);
					// The minimum is enforced, not only advertised.
					client.sendRequest(0, NbdProtocol.CMD_READ, 1, 100, 512, null);
					assertThat(client.readSimpleReply().error()).isEqualTo(NbdError.EINVAL.code());
					client.sendRequest(0, NbdProtocol.CMD_READ, 2, 512, 512, null);
					assertThat(client.readReply(512).error()).isZero();
				}
			});
	}

	@Test
	void propertyWinsOverTheBeansDeclarationsExceptReadOnlyWhichIsOred() {
		this.runner
			.withPropertyValues("nbd.exports.declared.description=from properties",
					"nbd.exports.declared.read-only=false", "nbd.exports.declared.minimum-block-size=4KB",
					"nbd.exports.declared.multi-conn=single")
			.run((context) -> {
				Export declared = context.getBean(NbdServer.class).export("declared");
				assertThat(declared.description()).isEqualTo("from properties");
				assertThat(declared.readOnly()).as("a backend that says it is read-only stays read-only").isTrue();
				assertThat(declared.minimumBlockSize()).isEqualTo(4096);
				// The bean's own preference (1 KiB) is a hint below the new minimum: raised to it.
				assertThat(declared.preferredBlockSize()).isEqualTo(4096);
				assertThat(declared.multiConnMode()).isEqualTo(MultiConnMode.SINGLE);
			});
	}

	@Test
	void unsetPropertiesLeaveTheBeansDeclarations() {
		this.runner.run((context) -> {
			Export declared = context.getBean(NbdServer.class).export("declared");
			assertThat(declared.description()).isEqualTo("declared by the bean");
			assertThat(declared.readOnly()).isTrue();
			assertThat(declared.minimumBlockSize()).isEqualTo(512);
			assertThat(declared.preferredBlockSize()).isEqualTo(1024);
			Export vault = context.getBean(NbdServer.class).export("vault");
			assertThat(vault.readOnly()).isFalse();
			assertThat(vault.description()).isNull();
		});
	}

	@Test
	void propertyExportsGetTheSamePolicy() {
		this.runner
			.withPropertyValues("nbd.exports.mem.type=memory", "nbd.exports.mem.size=1MB",
					"nbd.exports.mem.read-only=true", "nbd.exports.mem.description=scratch",
					"nbd.exports.mem.preferred-block-size=16KB")
			.run((context) -> {
				Export mem = context.getBean(NbdServer.class).export("mem");
				assertThat(mem.backend().isReadOnly()).as("read-only is policy, not storage").isFalse();
				assertThat(mem.backend().description()).isNull();
				assertThat(mem.readOnly()).isTrue();
				assertThat(mem.description()).isEqualTo("scratch");
				assertThat(mem.preferredBlockSize()).isEqualTo(16 * 1024);
				assertThat(mem.transmissionFlags() & NbdProtocol.TFLAG_READ_ONLY).isNotZero();
			});
	}

	private static ByteBuffer info(List<OptionReply> replies, int type) {
		for (OptionReply r : replies) {
			if (r.type() == NbdProtocol.REP_INFO) {
				ByteBuffer b = ByteBuffer.wrap(r.data());
				if (b.getShort() == type) {
					return b;
				}
			}
		}
		return null;
	}

	@Configuration(proxyBeanMethods = false)
	static class Beans {

		@Bean
		MemoryBackend vault() throws Exception {
			MemoryBackend backend = new MemoryBackend("vault", 1024 * 1024);
			backend.write(0, ByteBuffer.wrap(new byte[] { 7 }), false);
			return backend;
		}

		@Bean
		ExportBackend declared() {
			return new ExportBackend() {

				@Override
				public String name() {
					return "declared";
				}

				@Override
				public long size() {
					return 1024 * 1024;
				}

				@Override
				public String description() {
					return "declared by the bean";
				}

				@Override
				public boolean isReadOnly() {
					return true;
				}

				@Override
				public int minimumBlockSize() {
					return 512;
				}

				@Override
				public int preferredBlockSize() {
					return 1024;
				}

				@Override
				public void read(long offset, ByteBuffer dst) {
					dst.position(dst.limit());
				}

				@Override
				public void write(long offset, ByteBuffer src, boolean fua) {
					throw new UnsupportedOperationException();
				}
			};
		}

	}

}
