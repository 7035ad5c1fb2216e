package dev.nbd.testsupport;

import java.io.File;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.Map;

import org.junit.jupiter.api.Assertions;
import org.junit.jupiter.api.Assumptions;

/**
 * Real peers (nbdinfo, nbdsh, qemu-img, ...) from Debian packages. On a developer machine a
 * missing tool skips the test; on CI it fails it, so CI never passes by skipping.
 */
public final class ExternalTool {

	/**
	 * Variables CI systems set (besides {@code CI}): GitHub Actions, GitLab, Jenkins, Buildkite,
	 * CircleCI, Travis, Azure Pipelines, TeamCity, Bitbucket, AWS CodeBuild, Drone, AppVeyor. The
	 * root pom's report check uses the same list.
	 */
	static final List<String> CI_VARIABLES = List.of("GITHUB_ACTIONS", "GITLAB_CI", "JENKINS_URL", "BUILDKITE",
			"CIRCLECI", "TRAVIS", "TF_BUILD", "TEAMCITY_VERSION", "BITBUCKET_BUILD_NUMBER", "CODEBUILD_BUILD_ID", "DRONE",
			"APPVEYOR");

	private ExternalTool() {
	}

	/**
	 * Whether this runs on CI: {@code CI} set to anything but empty, {@code false}, {@code 0} or
	 * {@code no} ({@code true}, {@code 1}, {@code yes}, ...), or a CI system's own variable set.
	 */
	public static boolean inCi() {
		return inCi(System.getenv());
	}

	static boolean inCi(Map<String, String> env) {
		String ci = env.getOrDefault("CI", "").trim();
		if (!ci.isEmpty() && !List.of("false", "0", "no").contains(ci.toLowerCase(Locale.ROOT))) {
			return true;
		}
		return CI_VARIABLES.stream().anyMatch((name) -> !env.getOrDefault(name, "").isEmpty());
	}

	/** Absolute path of {@code name} on PATH (or /usr/sbin, /sbin), or skip/fail. */
	public static Path require(String name) {
		Path found = find(name);
		if (found == null) {
			String msg = name + " is not installed (install the Debian package; .ci/run does)";
			if (inCi()) {
				Assertions.fail(msg);
			}
			Assumptions.abort(msg);
		}
		return found;
	}

	public static Path find(String name) {
		String path = System.getenv().getOrDefault("PATH", "") + File.pathSeparator + "/usr/sbin:/sbin:/usr/bin";
		for (String dir : path.split(File.pathSeparator)) {
			if (dir.isEmpty()) {
				continue;
			}
			Path p = Path.of(dir, name);
			if (Files.isExecutable(p)) {
				return p;
			}
		}
		return null;
	}

	/** Skip (or fail in CI) unless {@code condition} holds, e.g. a Python module is importable. */
	public static void requireThat(boolean condition, String what) {
		if (!condition) {
			if (inCi()) {
				Assertions.fail(what);
			}
			Assumptions.abort(what);
		}
	}

}
