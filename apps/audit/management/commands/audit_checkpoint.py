from django.core.management.base import BaseCommand

from apps.audit.checkpoints import write_checkpoint


class Command(BaseCommand):
    help = "Write a signed checkpoint of the audit chain head to the checkpoint sink now."

    def handle(self, *args, **options):
        checkpoint = write_checkpoint()
        if checkpoint is None:
            self.stdout.write("The audit chain is empty: nothing to checkpoint.")
            return
        self.stdout.write(self.style.SUCCESS(f"Checkpoint written: seq {checkpoint.seq}, head {checkpoint.head_hash}."))
