package dev.nbd.autoconfigure;

import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;
import org.springframework.boot.WebApplicationType;
import org.springframework.boot.autoconfigure.AutoConfigurations;
import org.springframework.boot.autoconfigure.ImportAutoConfiguration;
import org.springframework.boot.autoconfigure.ssl.SslAutoConfiguration;
import org.springframework.boot.builder.SpringApplicationBuilder;
import org.springframework.boot.diagnostics.FailureAnalysis;
import org.springframework.boot.test.context.runner.ApplicationContextRunner;
import org.springframework.boot.test.system.CapturedOutput;
import org.springframework.boot.test.system.OutputCaptureExtension;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;

import dev.nbd.backend.ExportBackend;
import dev.nbd.backend.MemoryBackend;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatException;

/**
 * Every configuration mistake ends in a failure analysis (description and action) naming the
 * property, not in a stack trace.
 */
@ExtendWith(OutputCaptureExtension.class)
class NbdConfigurationFailureAnalyzerTests {

	private final ApplicationContextRunner runner = new ApplicationContextRunner()
		.withConfiguration(AutoConfigurations.of(NbdServerAutoConfiguration.class, SslAutoConfiguration.class))
		.withPropertyValues("nbd.server.port=0");

	@Test
	void memoryExportWithoutSize() {
		assertAnalysis(this.runner.withPropertyValues("nbd.exports.mem.type=memory"),
				"nbd.exports.mem.size is required", "nbd.exports.mem.size=1GB");
	}

	@Test
	void negativeSize() {
		assertAnalysis(this.runner.withPropertyValues("nbd.exports.mem.type=memory", "nbd.exports.mem.size=-1MB"),
				"nbd.exports.mem.size is negative", "Set nbd.exports.mem.size");
	}

	@Test
	void pathOnAMemoryExport(@TempDir Path dir) {
		assertAnalysis(this.runner.withPropertyValues("nbd.exports.mem.type=memory", "nbd.exports.mem.size=1MB",
				"nbd.exports.mem.path=" + dir.resolve("x.img")), "nbd.exports.mem.path is set, but it only applies",
				"Remove nbd.exports.mem.path");
	}

	@Test
	void fileExportWithoutPath() {
		assertAnalysis(this.runner.withPropertyValues("nbd.exports.disk.type=file", "nbd.exports.disk.size=1MB"),
				"nbd.exports.disk.path is required", "Set nbd.exports.disk.path");
	}

	@Test
	void missingFileWithoutSizeIsNotCreated(@TempDir Path dir) {
		Path path = dir.resolve("nosuch/disk.img");
		assertAnalysis(this.runner.withPropertyValues("nbd.exports.disk.type=file", "nbd.exports.disk.path=" + path),
				"does not exist, and nbd.exports.disk.size is not set", "set nbd.exports.disk.size");
		assertThat(dir.resolve("nosuch")).doesNotExist();
	}

	@Test
	void missingFileOfAReadOnlyExportIsNotCreated(@TempDir Path dir) {
		Path path = dir.resolve("disk.img");
		assertAnalysis(this.runner.withPropertyValues("nbd.exports.disk.type=file", "nbd.exports.disk.path=" + path,
				"nbd.exports.disk.size=1MB", "nbd.exports.disk.read-only=true"),
				"a read-only export is never created", "Check nbd.exports.disk.path");
		assertThat(path).doesNotExist();
	}

	@Test
	void pathThatIsADirectory(@TempDir Path dir) {
		assertAnalysis(this.runner.withPropertyValues("nbd.exports.disk.type=file", "nbd.exports.disk.path=" + dir,
				"nbd.exports.disk.size=1MB"), "is a directory", "Set nbd.exports.disk.path to a file");
	}

	@Test
	void createdFileAndDirectoryAreLogged(@TempDir Path dir, CapturedOutput output) {
		Path path = dir.resolve("data/disk.img");
		this.runner.withPropertyValues("nbd.exports.disk.type=file", "nbd.exports.disk.path=" + path,
				"nbd.exports.disk.size=1MB").run((context) -> {
					assertThat(context).hasNotFailed();
					assertThat(path).hasSize(1024 * 1024);
					assertThat(output).contains("Creating directory " + dir.resolve("data"))
						.contains("Creating sparse file " + path);
				});
	}

	@Test
	void unknownDefaultExport() {
		assertAnalysis(this.runner.withPropertyValues("nbd.exports.mem.type=memory", "nbd.exports.mem.size=1MB",
				"nbd.server.default-export=nosuch"), "nbd.server.default-export is 'nosuch', but there is no export"
						+ " of that name (exports: [mem])", "Set nbd.server.default-export to one of the exports");
	}

	@Test
	void minimumBlockSizeNotAPowerOfTwo() {
		assertAnalysis(this.runner.withPropertyValues("nbd.exports.mem.type=memory", "nbd.exports.mem.size=1MB",
				"nbd.exports.mem.minimum-block-size=3000B"),
				"nbd.exports.mem.minimum-block-size is 3000B: the minimum block size must be a power of two",
				"Set nbd.exports.mem.minimum-block-size");
	}

	@Test
	void preferredBlockSizeBelowTheMinimum() {
		assertAnalysis(this.runner.withPropertyValues("nbd.exports.mem.type=memory", "nbd.exports.mem.size=1MB",
				"nbd.exports.mem.minimum-block-size=4KB", "nbd.exports.mem.preferred-block-size=1KB"),
				"preferred block size must be a power of two of at least 512 bytes and at least the minimum block size",
				"nbd.exports.mem.preferred-block-size");
	}

	@Test
	void preferredBlockSizeAboveMaxPayload() {
		assertAnalysis(this.runner.withPropertyValues("nbd.exports.mem.type=memory", "nbd.exports.mem.size=1MB",
				"nbd.exports.mem.preferred-block-size=64MB"), "larger than nbd.server.max-payload (33554432B)",
				"raise nbd.server.max-payload");
	}

	@Test
	void memoryBudgetBelowTwiceMaxPayload() {
		assertAnalysis(this.runner.withPropertyValues("nbd.server.memory-budget=32MB"),
				"nbd.server.memory-budget is '33554432B', which must be at least twice nbd.server.max-payload (67108864B)",
				"Raise nbd.server.memory-budget");
	}

	@Test
	void beanDeclaringAnInvalidBlockSize() {
		assertAnalysis(this.runner.withUserConfiguration(OddBlockSize.class),
				"export 'odd': minimum block size must be a power of two", "minimumBlockSize()");
	}

	@Test
	void badServerCidr() {
		assertAnalysis(this.runner.withPropertyValues("nbd.server.allowed-addresses=10.0.0.0/8,intranet"),
				"nbd.server.allowed-addresses has an invalid entry: not an IP address or CIDR block: 'intranet'",
				"host names are not accepted");
	}

	@Test
	void badExportCidr() {
		assertAnalysis(this.runner.withPropertyValues("nbd.exports.mem.type=memory", "nbd.exports.mem.size=1MB",
				"nbd.exports.mem.allowed-addresses=10.0.0.0/33"),
				"nbd.exports.mem.allowed-addresses has an invalid entry: prefix length out of range", "CIDR blocks");
	}

	@Test
	void unknownSslBundle() {
		assertAnalysis(this.runner.withPropertyValues("nbd.server.ssl.bundle=nosuch"),
				"nbd.server.ssl.bundle is 'nosuch', but there is no SSL bundle of that name (none is defined)",
				"spring.ssl.bundle.pem.nosuch");
	}

	@Test
	void clientAuthWithoutBundle() {
		assertAnalysis(this.runner.withPropertyValues("nbd.server.ssl.client-auth=need"),
				"nbd.server.ssl.client-auth is 'need', but TLS is off", "Set nbd.server.ssl.bundle");
	}

	@Test
	void propertyExportAndBeanOfTheSameName() {
		assertAnalysis(this.runner.withUserConfiguration(UserExport.class)
			.withPropertyValues("nbd.exports.user.type=memory", "nbd.exports.user.size=1MB"),
				"nbd.exports.user.type is set, which makes an export named 'user', but an ExportBackend bean",
				"remove nbd.exports.user.type");
	}

	@Test
	void twoBeansOfTheSameName() {
		assertAnalysis(this.runner.withUserConfiguration(UserExport.class, SameName.class),
				"Two ExportBackend beans are named 'user'", "distinct name()");
	}

	@Test
	void storageKeysOnABeanExport() {
		assertAnalysis(this.runner.withUserConfiguration(UserExport.class)
			.withPropertyValues("nbd.exports.user.size=1MB", "nbd.exports.user.event-loop-io=false"),
				"nbd.exports.user.size, nbd.exports.user.event-loop-io cannot apply to export 'user': it is an"
						+ " ExportBackend bean",
				"Remove nbd.exports.user.size, nbd.exports.user.event-loop-io");
	}

	@Test
	void optionsForAnExportThatDoesNotExist() {
		assertAnalysis(this.runner.withUserConfiguration(UserExport.class)
			.withPropertyValues("nbd.exports.usr.read-only=true"),
				"nbd.exports.usr sets options of an export named 'usr', but it has no type and no ExportBackend bean"
						+ " is named 'usr' (beans: [user])",
				"Set nbd.exports.usr.type");
	}

	@Test
	void maxPayloadOutOfRange() {
		assertAnalysis(this.runner.withPropertyValues("nbd.server.max-payload=1KB"),
				"nbd.server.max-payload is '1024B', which must be between 4096B and 2GB", "Change nbd.server.max-payload");
	}

	@Test
	void portOutOfRange() {
		assertAnalysis(this.runner.withPropertyValues("nbd.server.port=70000"),
				"nbd.server.port is '70000', which is not a TCP port", "from 1 to 65535");
	}

	@Test
	void maxConnectionsBelowOne() {
		assertAnalysis(this.runner.withPropertyValues("nbd.server.max-connections=0"),
				"nbd.server.max-connections must be at least 1", "Change nbd.server.max-connections");
	}

	@Test
	void addressOfAnotherHostIsNotReportedAsAPortInUse() {
		// TEST-NET-1 (RFC 5737): never an address of this host.
		this.runner.withPropertyValues("nbd.server.address=192.0.2.1").run((context) -> {
			assertThat(context).hasFailed();
			FailureAnalysis analysis = new NbdPortInUseFailureAnalyzer().analyze(context.getStartupFailure());
			assertThat(analysis.getDescription()).contains("could not bind 192.0.2.1");
			assertThat(analysis.getAction()).contains("nbd.server.address is an address of this host")
				.doesNotContain("Stop the process");
		});
	}

	@Test
	void applicationPrintsTheAnalysisWithoutAStackTrace(CapturedOutput output) {
		assertThatException().isThrownBy(() -> new SpringApplicationBuilder(Application.class)
			.web(WebApplicationType.NONE)
			.properties("nbd.server.port=0", "nbd.server.default-export=nosuch", "spring.main.banner-mode=off")
			.run());
		assertThat(output).contains("APPLICATION FAILED TO START")
			.contains("Description:\n\nnbd.server.default-export is 'nosuch'")
			.contains("Action:\n\nSet nbd.server.default-export")
			.doesNotContain("at dev.nbd.");
	}

	@Test
	void valueThatDoesNotBindGetsSpringBootsAnalysis(CapturedOutput output) {
		assertThatException().isThrownBy(() -> new SpringApplicationBuilder(Application.class)
			.web(WebApplicationType.NONE)
			.properties("nbd.server.port=0", "nbd.exports.mem.type=floppy", "spring.main.banner-mode=off")
			.run());
		assertThat(output).contains("APPLICATION FAILED TO START")
			.contains("nbd.exports.mem.type")
			.contains("Action:")
			.doesNotContain("at dev.nbd.");
	}

	private static void assertAnalysis(ApplicationContextRunner runner, String description, String action) {
		runner.run((context) -> {
			assertThat(context).hasFailed();
			FailureAnalysis analysis = new NbdConfigurationFailureAnalyzer().analyze(context.getStartupFailure());
			assertThat(analysis).as("failure analysis of %s", context.getStartupFailure()).isNotNull();
			assertThat(analysis.getDescription()).contains(description);
			assertThat(analysis.getAction()).contains(action);
		});
	}

	@Configuration(proxyBeanMethods = false)
	@ImportAutoConfiguration({ NbdServerAutoConfiguration.class, SslAutoConfiguration.class })
	static class Application {

	}

	@Configuration(proxyBeanMethods = false)
	static class UserExport {

		@Bean
		ExportBackend user() {
			return new MemoryBackend("user", 1024 * 1024);
		}

	}

	@Configuration(proxyBeanMethods = false)
	static class SameName {

		@Bean
		ExportBackend userAgain() {
			return new MemoryBackend("user", 4096);
		}

	}

	@Configuration(proxyBeanMethods = false)
	static class OddBlockSize {

		@Bean
		ExportBackend odd() {
			return new MemoryBackend("odd", 4096) {

				@Override
				public int minimumBlockSize() {
					return 3;
				}

			};
		}

	}

}
