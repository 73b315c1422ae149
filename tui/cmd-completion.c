/* completion: prints a bash or zsh completion script made from the command
 * table (commands, aliases, each command's options and their values as its
 * usage line spells them), the config key table, and, at completion time,
 * the pids `probing list` finds for -t and the tables `probing tables`
 * lists for a query. Nothing here is written twice: a new command, option
 * or key shows up in the scripts by itself. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config-keys.h"
#include "xmalloc.h"
#include "tui.h"

#define CMD_COMPLETION_OPTS 16

/* What a command's positional words complete to. */
enum cmd_completion_words {
	CMD_COMPLETION_NONE,
	CMD_COMPLETION_KEYS,
	CMD_COMPLETION_COMMANDS,
	CMD_COMPLETION_TABLES,
	CMD_COMPLETION_SHELLS,
};

static const struct {
	const char *command;
	enum cmd_completion_words words;
} cmd_completion_words[] = {
	{ "config", CMD_COMPLETION_KEYS },
	{ "help", CMD_COMPLETION_COMMANDS },
	{ "query", CMD_COMPLETION_TABLES },
	{ "completion", CMD_COMPLETION_SHELLS },
};

/* One option read from a usage line: "-f" with values "table json csv",
 * "-o" with a FILE, "--batch" with nothing. Owns its strings. */
struct cmd_completion_opt {
	char *name;
	char *values; /* space-separated words, or NULL */
	int file;     /* takes a file name */
	int arg;      /* takes a value */
};

/* Reads the options out of a usage line such as "[-f table|json|csv]
 * [--steps N] [-o FILE]"; returns how many (at most max). */
static int
cmd_completion_opts(const char *args, struct cmd_completion_opt *opts, int max)
{
	char *copy = xstrdup(args), *p, *tok[64], *save = NULL, *q;
	int ntok = 0, n = 0, i;

	for (p = copy; *p; p++)
		if (*p == '[' || *p == ']')
			*p = ' ';
	for (p = strtok_r(copy, " ", &save); p != NULL && ntok < 64;
	     p = strtok_r(NULL, " ", &save))
		tok[ntok++] = p;
	for (i = 0; i < ntok && n < max; i++) {
		const char *next = i + 1 < ntok ? tok[i + 1] : "";

		if (tok[i][0] != '-' || tok[i][1] == '\0')
			continue;
		memset(&opts[n], 0, sizeof opts[n]);
		opts[n].name = xstrdup(tok[i]);
		if (*next != '\0' && *next != '-' && strcmp(next, "|") != 0) {
			opts[n].arg = 1;
			opts[n].file = strcmp(next, "FILE") == 0;
			if (islower((unsigned char)*next)) {
				opts[n].values = xstrdup(next);
				for (q = opts[n].values; *q; q++)
					if (*q == '|')
						*q = ' ';
			}
		}
		n++;
	}
	free(copy);
	return n;
}

static void
cmd_completion_opts_free(struct cmd_completion_opt *opts, int n)
{
	while (n-- > 0) {
		free(opts[n].name);
		free(opts[n].values);
	}
}

static int
cmd_completion_any_arg(const struct cmd_completion_opt *opts, int n)
{
	while (n-- > 0)
		if (opts[n].arg)
			return 1;
	return 0;
}

static enum cmd_completion_words
cmd_completion_words_of(const struct cmd_entry *e)
{
	size_t i;

	for (i = 0;
	     i < sizeof cmd_completion_words / sizeof cmd_completion_words[0];
	     i++)
		if (strcmp(cmd_completion_words[i].command, e->name) == 0)
			return cmd_completion_words[i].words;
	return CMD_COMPLETION_NONE;
}

/* Prints every command name and alias, space-separated. */
static void
cmd_completion_commands(FILE *f)
{
	int i;

	for (i = 0; cmd_table[i] != NULL; i++)
		fprintf(f, "%s%s%s%s", i ? " " : "", cmd_table[i]->name,
		    cmd_table[i]->alias ? " " : "",
		    cmd_table[i]->alias ? cmd_table[i]->alias : "");
}

static void
cmd_completion_keys(FILE *f)
{
	int i;

	for (i = 0; i < CONFIG_COUNT; i++)
		fprintf(f, "%s%s", i ? " " : "", config_keys[i].name);
}

/* The words of kind w as a shell word list (no quotes needed: names). */
static void
cmd_completion_word_list(FILE *f, enum cmd_completion_words w)
{
	if (w == CMD_COMPLETION_KEYS)
		cmd_completion_keys(f);
	else if (w == CMD_COMPLETION_COMMANDS) {
		cmd_completion_commands(f);
		fputs(" --man", f);
	} else if (w == CMD_COMPLETION_SHELLS)
		fputs("bash zsh", f);
}

/* Writes s single-quoted for a shell. */
static void
cmd_completion_quote(FILE *f, const char *s)
{
	fputc('\'', f);
	for (; *s; s++) {
		if (*s == '\'')
			fputs("'\\''", f);
		else
			fputc(*s, f);
	}
	fputc('\'', f);
}

static const char cmd_completion_global[] =
    "-t --target --timeout --token-file -h --help -V --version";

/* Shell functions both scripts share: probed pids and a target's tables,
 * each from the probing program being completed. */
static const char cmd_completion_helpers[] =
    "_probing_pids() {\n"
    "  \"$1\" list -f csv 2>/dev/null | tail -n +2 | cut -d, -f1\n"
    "}\n"
    "_probing_tables() {\n"
    "  [ -n \"$2\" ] || return 0\n"
    "  \"$1\" -t \"$2\" tables -f csv 2>/dev/null | tail -n +2 | cut -d, "
    "-f1 | sort -u\n"
    "}\n";

static void
cmd_completion_bash(FILE *f)
{
	struct cmd_completion_opt opts[CMD_COMPLETION_OPTS];
	const struct cmd_entry *e;
	enum cmd_completion_words w;
	int i, j, n;

	fputs("# bash completion for probing; made by: probing completion "
	      "bash\n"
	      "# (install it as "
	      "PREFIX/share/bash-completion/completions/probing, or source "
	      "it)\n",
	    f);
	fputs(cmd_completion_helpers, f);
	fputs("_probing() {\n"
	      "  local cur=${COMP_WORDS[COMP_CWORD]} "
	      "prev=${COMP_WORDS[COMP_CWORD-1]}\n"
	      "  local prog=${COMP_WORDS[0]} cmd= target= i w pre=\n"
	      "  command -v \"$prog\" >/dev/null 2>&1 || prog=probing\n"
	      "  for ((i = 1; i < COMP_CWORD; i++)); do\n"
	      "    w=${COMP_WORDS[i]}\n"
	      "    case $w in\n"
	      "      -t|--target) target=${COMP_WORDS[i+1]}; ((i++)); "
	      "continue ;;\n"
	      "      --timeout|--token-file) ((i++)); continue ;;\n"
	      "      -*) continue ;;\n"
	      "    esac\n"
	      "    [ -z \"$cmd\" ] && cmd=$w\n"
	      "  done\n"
	      "  target=${target%%,*}\n"
	      "  case $prev in\n"
	      "    -t|--target)\n"
	      "      [[ $cur == *,* ]] && pre=${cur%,*},\n"
	      "      COMPREPLY=($(compgen -P \"$pre\" -W \"$(_probing_pids "
	      "\"$prog\")\" -- \"${cur##*,}\"))\n"
	      "      return ;;\n"
	      "    --token-file) COMPREPLY=($(compgen -f -- \"$cur\")); "
	      "return ;;\n"
	      "    --timeout) return ;;\n"
	      "  esac\n"
	      "  if [ -z \"$cmd\" ]; then\n"
	      "    if [[ $cur == -* ]]; then\n"
	      "      COMPREPLY=($(compgen -W ",
	    f);
	cmd_completion_quote(f, cmd_completion_global);
	fputs(" -- \"$cur\"))\n    else\n      COMPREPLY=($(compgen -W '", f);
	cmd_completion_commands(f);
	fputs("' -- \"$cur\"))\n    fi\n    return\n  fi\n  case $cmd in\n", f);
	for (i = 0; (e = cmd_table[i]) != NULL; i++) {
		n = cmd_completion_opts(e->args, opts, CMD_COMPLETION_OPTS);
		fprintf(f, "    %s%s%s)\n", e->name, e->alias ? "|" : "",
		    e->alias ? e->alias : "");
		if (cmd_completion_any_arg(opts, n))
			fputs("      case $prev in\n", f);
		for (j = 0; j < n; j++) {
			if (!opts[j].arg)
				continue;
			fprintf(f, "        %s) ", opts[j].name);
			if (opts[j].values != NULL)
				fprintf(f,
				    "COMPREPLY=($(compgen -W '%s' -- "
				    "\"$cur\")); ",
				    opts[j].values);
			else if (opts[j].file)
				fputs("COMPREPLY=($(compgen -f -- \"$cur\")); ",
				    f);
			fputs("return ;;\n", f);
		}
		if (cmd_completion_any_arg(opts, n))
			fputs("      esac\n", f);
		fputs("      if [[ $cur == -* ]]; then\n"
		      "        COMPREPLY=($(compgen -W '",
		    f);
		for (j = 0; j < n; j++)
			fprintf(f, "%s ", opts[j].name);
		fprintf(f, "%s' -- \"$cur\"))\n        return\n      fi\n",
		    e->target != CMD_TARGET_NONE ? "-t" : "");
		w = cmd_completion_words_of(e);
		if (w == CMD_COMPLETION_TABLES)
			fputs("      [[ $cur == *\" \"* ]] && pre=\"${cur% *} "
			      "\"\n"
			      "      COMPREPLY=($(compgen -P \"$pre\" -W "
			      "\"$(_probing_tables \"$prog\" \"$target\")\" -- "
			      "\"${cur##* }\"))\n",
			    f);
		else if (w != CMD_COMPLETION_NONE) {
			fputs("      COMPREPLY=($(compgen -W '", f);
			cmd_completion_word_list(f, w);
			fputs("' -- \"$cur\"))\n", f);
		}
		fputs("      ;;\n", f);
		cmd_completion_opts_free(opts, n);
	}
	fputs("  esac\n}\ncomplete -F _probing probing\n", f);
}

static void
cmd_completion_zsh(FILE *f)
{
	struct cmd_completion_opt opts[CMD_COMPLETION_OPTS];
	const struct cmd_entry *e;
	enum cmd_completion_words w;
	int i, j, n;

	fputs("#compdef probing\n"
	      "# zsh completion for probing; made by: probing completion zsh\n"
	      "# (put it in a directory of $fpath as _probing, or source "
	      "it after compinit)\n",
	    f);
	fputs(cmd_completion_helpers, f);
	fputs("_probing() {\n"
	      "  local prog=${words[1]} cmd= target= i w "
	      "prev=${words[CURRENT-1]}\n"
	      "  local -a c\n"
	      "  (( $+commands[$prog] )) || [[ -x $prog ]] || prog=probing\n"
	      "  for ((i = 2; i < CURRENT; i++)); do\n"
	      "    w=${words[i]}\n"
	      "    case $w in\n"
	      "      (-t|--target) target=${words[i+1]}; ((i++)); continue "
	      ";;\n"
	      "      (--timeout|--token-file) ((i++)); continue ;;\n"
	      "      (-*) continue ;;\n"
	      "    esac\n"
	      "    [[ -z $cmd ]] && cmd=$w\n"
	      "  done\n"
	      "  target=${target%%,*}\n"
	      "  case $prev in\n"
	      "    (-t|--target)\n"
	      "      compset -P '*,'\n"
	      "      c=(${(f)\"$(_probing_pids $prog)\"})\n"
	      "      compadd -a c\n"
	      "      return ;;\n"
	      "    (--token-file) _files; return ;;\n"
	      "    (--timeout) return ;;\n"
	      "  esac\n"
	      "  if [[ -z $cmd ]]; then\n"
	      "    if [[ $PREFIX == -* ]]; then\n"
	      "      compadd -- ",
	    f);
	fputs(cmd_completion_global, f);
	fputs("\n    else\n      c=(\n", f);
	for (i = 0; (e = cmd_table[i]) != NULL; i++) {
		char *d = NULL;

		xasprintf(&d, "%s:%s", e->name, e->help);
		fputs("        ", f);
		cmd_completion_quote(f, d);
		fputc('\n', f);
		free(d);
		if (e->alias != NULL) {
			xasprintf(&d, "%s:%s", e->alias, e->help);
			fputs("        ", f);
			cmd_completion_quote(f, d);
			fputc('\n', f);
			free(d);
		}
	}
	fputs("      )\n      _describe command c\n    fi\n    return\n  fi\n"
	      "  case $cmd in\n",
	    f);
	for (i = 0; (e = cmd_table[i]) != NULL; i++) {
		n = cmd_completion_opts(e->args, opts, CMD_COMPLETION_OPTS);
		fprintf(f, "    (%s%s%s)\n", e->name, e->alias ? "|" : "",
		    e->alias ? e->alias : "");
		if (cmd_completion_any_arg(opts, n))
			fputs("      case $prev in\n", f);
		for (j = 0; j < n; j++) {
			if (!opts[j].arg)
				continue;
			fprintf(f, "        (%s) ", opts[j].name);
			if (opts[j].values != NULL)
				fprintf(f, "compadd -- %s; ", opts[j].values);
			else if (opts[j].file)
				fputs("_files; ", f);
			fputs("return ;;\n", f);
		}
		if (cmd_completion_any_arg(opts, n))
			fputs("      esac\n", f);
		fputs("      if [[ $PREFIX == -* ]]; then\n"
		      "        compadd -- ",
		    f);
		for (j = 0; j < n; j++)
			fprintf(f, "%s ", opts[j].name);
		fprintf(f, "%s\n        return\n      fi\n",
		    e->target != CMD_TARGET_NONE ? "-t" : "");
		w = cmd_completion_words_of(e);
		if (w == CMD_COMPLETION_TABLES)
			fputs("      compset -P '* '\n"
			      "      c=(${(f)\"$(_probing_tables $prog "
			      "$target)\"})\n"
			      "      compadd -a c\n",
			    f);
		else if (w != CMD_COMPLETION_NONE) {
			fputs("      compadd -- ", f);
			cmd_completion_word_list(f, w);
			fputc('\n', f);
		}
		fputs("      ;;\n", f);
		cmd_completion_opts_free(opts, n);
	}
	fputs("  esac\n}\n"
	      "if [[ $funcstack[1] == _probing ]]; then\n"
	      "  _probing \"$@\"\n"
	      "else\n"
	      "  compdef _probing probing\n"
	      "fi\n",
	    f);
}

static const struct {
	const char *shell;
	void (*print)(FILE *);
} cmd_completion_shells[] = {
	{ "bash", cmd_completion_bash },
	{ "zsh", cmd_completion_zsh },
};

static int
cmd_completion_exec(struct cmd_ctx *ctx, int argc, char **argv)
{
	size_t i;

	(void)ctx;
	if (argc != 2)
		return cmd_usage(&cmd_completion_entry,
		    argc < 2 ? "which shell? bash or zsh"
			     : "too many arguments");
	for (i = 0;
	     i < sizeof cmd_completion_shells / sizeof cmd_completion_shells[0];
	     i++)
		if (strcmp(argv[1], cmd_completion_shells[i].shell) == 0) {
			cmd_completion_shells[i].print(stdout);
			return 0;
		}
	return cmd_usage(&cmd_completion_entry,
	    "no completion for shell '%s' (bash or zsh)", argv[1]);
}

const struct cmd_entry cmd_completion_entry = {
	.name = "completion",
	.args = "bash|zsh",
	.help = "print a shell completion script",
	.detail = "bash: source <(probing completion bash), or `make install` "
		  "puts it where\n"
		  "bash-completion finds it; zsh: source <(probing completion "
		  "zsh) after compinit.\n"
		  "completes commands, options, config keys, the pids of "
		  "probed processes after -t\n"
		  "and, with a target, table names in a query\n",
	.exec = cmd_completion_exec,
};
