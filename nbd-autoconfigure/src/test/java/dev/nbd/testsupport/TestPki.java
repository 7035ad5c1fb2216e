package dev.nbd.testsupport;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;

/**
 * A throw-away certificate authority made with the {@code openssl} CLI: a CA, a server
 * certificate for {@code localhost}/{@code 127.0.0.1} and a client certificate, as PEM files in
 * the layout libnbd ({@code tls-certificates=DIR}) and qemu ({@code tls-creds-x509,dir=DIR})
 * read: {@code ca-cert.pem}, {@code client-cert.pem}, {@code client-key.pem}; the server side
 * also has {@code server-cert.pem} and {@code server-key.pem}.
 */
public final class TestPki {

	/** Subject of the client certificate, as Java prints it (RFC 2253). */
	public static final String CLIENT_SUBJECT = "CN=nbd-test-client,O=nbd-tests";

	private final Path dir;

	private TestPki(Path dir) {
		this.dir = dir;
	}

	/** Makes the CA, a server and a client certificate in {@code dir}. */
	public static TestPki create(Path dir) {
		try {
			Files.createDirectories(dir);
		}
		catch (IOException ex) {
			throw new UncheckedIOException(ex);
		}
		openssl(dir, "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
				"-keyout", "ca-key.pem", "-out", "ca-cert.pem", "-days", "2", "-subj", "/O=nbd-tests/CN=nbd-test-ca",
				"-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign");
		TestPki pki = new TestPki(dir);
		pki.issue("server", "/O=nbd-tests/CN=localhost", "serverAuth", "subjectAltName=DNS:localhost,IP:127.0.0.1");
		pki.issue("client", "/O=nbd-tests/CN=nbd-test-client", "clientAuth", null);
		return pki;
	}

	/**
	 * Issues {@code <name>-cert.pem} and {@code <name>-key.pem}, signed by this CA (or replaces
	 * them, for rotation).
	 */
	public void issue(String name, String subject, String extendedKeyUsage, String extraExtension) {
		try {
			Path ext = this.dir.resolve(name + ".ext");
			StringBuilder text = new StringBuilder("basicConstraints=CA:FALSE\n")
				.append("keyUsage=critical,digitalSignature,keyEncipherment\n")
				.append("extendedKeyUsage=")
				.append(extendedKeyUsage)
				.append('\n');
			if (extraExtension != null) {
				text.append(extraExtension).append('\n');
			}
			Files.writeString(ext, text);
			openssl(this.dir, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
					"-keyout", name + "-key.new", "-out", name + ".csr", "-subj", subject);
			openssl(this.dir, "x509", "-req", "-in", name + ".csr", "-CA", "ca-cert.pem", "-CAkey", "ca-key.pem",
					"-set_serial", Long.toString(System.nanoTime() & Long.MAX_VALUE), "-days", "2", "-extfile",
					name + ".ext", "-out", name + "-cert.new");
			// Key and certificate change together, each by an atomic rename.
			Files.move(this.dir.resolve(name + "-key.new"), this.dir.resolve(name + "-key.pem"),
					java.nio.file.StandardCopyOption.REPLACE_EXISTING, java.nio.file.StandardCopyOption.ATOMIC_MOVE);
			Files.move(this.dir.resolve(name + "-cert.new"), this.dir.resolve(name + "-cert.pem"),
					java.nio.file.StandardCopyOption.REPLACE_EXISTING, java.nio.file.StandardCopyOption.ATOMIC_MOVE);
		}
		catch (IOException ex) {
			throw new UncheckedIOException(ex);
		}
	}

	public Path dir() {
		return this.dir;
	}

	public Path caCert() {
		return this.dir.resolve("ca-cert.pem");
	}

	public Path serverCert() {
		return this.dir.resolve("server-cert.pem");
	}

	public Path serverKey() {
		return this.dir.resolve("server-key.pem");
	}

	public Path clientCert() {
		return this.dir.resolve("client-cert.pem");
	}

	public Path clientKey() {
		return this.dir.resolve("client-key.pem");
	}

	/** A directory for libnbd/qemu clients: the CA, and the client certificate unless {@code withCert} is false. */
	public Path clientDir(Path target, boolean withCert) {
		try {
			Files.createDirectories(target);
			Files.copy(caCert(), target.resolve("ca-cert.pem"), java.nio.file.StandardCopyOption.REPLACE_EXISTING);
			if (withCert) {
				Files.copy(clientCert(), target.resolve("client-cert.pem"),
						java.nio.file.StandardCopyOption.REPLACE_EXISTING);
				Files.copy(clientKey(), target.resolve("client-key.pem"),
						java.nio.file.StandardCopyOption.REPLACE_EXISTING);
			}
			return target;
		}
		catch (IOException ex) {
			throw new UncheckedIOException(ex);
		}
	}

	/** Spring Boot PEM SSL bundle properties for the server side of this PKI. */
	public List<String> bundleProperties(String bundle) {
		String prefix = "spring.ssl.bundle.pem." + bundle + ".";
		return List.of(prefix + "keystore.certificate=file:" + serverCert(),
				prefix + "keystore.private-key=file:" + serverKey(), prefix + "truststore.certificate=file:" + caCert());
	}

	private static void openssl(Path dir, String... args) {
		ExternalTool.require("openssl");
		List<String> command = new java.util.ArrayList<>();
		command.add("openssl");
		command.addAll(List.of(args));
		Processes.run(Duration.ofSeconds(30), dir, null, command).assertSuccess();
	}

}
